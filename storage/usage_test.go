package storage

import (
	"bytes"
	"testing"

	"github.com/rhizon/rhizon/engine"
)

// TenantBytes counts each tenant's records, only in its own shard, and
// grows with what the tenant writes (real Badger, values in the value log
// included).
func TestTenantBytes(t *testing.T) {
	db := openDB(t, t.TempDir())
	s, other := db.Shard(3), db.Shard(4)
	big, small := addr("big", "e1"), addr("small", "e1")
	state := bytes.Repeat([]byte("x"), 64<<10) // past Badger's value threshold
	commit(t, s, func(b engine.Batch) {
		b.PutEntity(big, engine.Entity{Version: 1, State: state})
		b.AppendHistory(big, engine.Position{Index: 1, Ordinal: 1}, engine.HistoryEvent, state)
		b.PutResult(big, "k1", []byte("r"))
		b.PutTimer(engine.Timer{Address: big, Name: "t", At: 5, Payload: []byte("p")})
		b.PutEntity(small, engine.Entity{Version: 1, State: []byte("{}")})
		b.SetMeta(engine.Meta{Index: 1})
	})
	commit(t, other, func(b engine.Batch) {
		b.PutEntity(addr("elsewhere", "e"), engine.Entity{Version: 1, State: []byte("{}")})
		b.SetMeta(engine.Meta{Index: 1})
	})
	u, err := s.TenantBytes()
	if err != nil {
		t.Fatal(err)
	}
	if u["big"] < 2*int64(len(state)) {
		t.Errorf("big: %d bytes; it stores two %d-byte values", u["big"], len(state))
	}
	if u["small"] <= 0 || u["small"] > 1024 {
		t.Errorf("small: %d bytes", u["small"])
	}
	if _, ok := u["elsewhere"]; ok || len(u) != 2 {
		t.Errorf("usage %v counts another shard's tenant", u)
	}
	before := u["big"]
	commit(t, s, func(b engine.Batch) {
		b.AppendHistory(big, engine.Position{Index: 2, Ordinal: 1}, engine.HistoryEvent, state)
		b.SetMeta(engine.Meta{Index: 2})
	})
	if u, _ = s.TenantBytes(); u["big"] < before+int64(len(state)) {
		t.Errorf("big after one more event: %d; before %d", u["big"], before)
	}
}
