package engine_test

import (
	"encoding/hex"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
)

// The stored, hashed and replicated bytes are a storage format: existing data
// directories and Raft logs must load after any change to the code that
// writes them. These values were recorded once; a change here is a
// storage-format change and needs a migration, not a new golden value.
const (
	goldenStateHash = "5d95b263106362266f790ea13bd307f22f1114ae90348e3c9f46f0404f36abae"
	goldenEvent     = "0a206534646133396333646530373633303665376139383865363331313333386262120e6576742e6b762e6372656174" +
		"65641a0e0a01611201771a026b762202673220012a0f7b22646f63223a7b2261223a317d7d3080d095ffbc313a06632d" +
		"672d6b324a06632d672d6b325a0d0a05616c696365120475736572600768017002"
	goldenRejection = "0a0f6576742e6b762e72656a65637465641206632d672d6b351a0d636d642e6b762e637265617465220e0a0161120177" +
		"1a026b7622026732280432066578697374733a40646f63756d656e7420616c7265616479206578697374733b20757365" +
		"20757064617465206f722070617463682c206f722064656c65746520697420666972737440f4d395ffbc314a0d0a0561" +
		"6c6963651204757365725204672d6b3560027206632d672d6b35800107880102900103"
	goldenResult = "0a06632d672d6b34100130023a85010a2031653334343863396134656135376132386561653262666263383531366338" +
		"31120e6576742e6b762e706174636865641a0e0a01611201771a026b762202673220022a137b227061746368223a7b22" +
		"62223a2278227d7d30f4d395ffbc313a06632d672d6b344a06632d672d6b345a0d0a05616c6963651204757365726007" +
		"680270024002"
	goldenOutbox = "450a20306135303430336339353963613566616437656264636231376433346633383912116576742e636f756e746572" +
		"2e61646465641a130a01611201771a07636f756e7465722202673120012a167b22616d6f756e74223a332c2276616c75" +
		"65223a337d3080d095ffbc313a06632d672d6b314a06632d672d6b315a0d0a05616c6963651204757365726007680170" +
		"01"
	goldenLogEntry = "080710f4d395ffbc311a5b0a06632d672d6b33120f636d642e636f756e7465722e6164641a130a01611201771a07636f" +
		"756e74657222026731220c7b22616d6f756e74223a317d2a04672d6b3330073a0d0a05616c6963651204757365724206" +
		"0a016112012a1a580a06632d672d6b34120c636d642e6b762e70617463681a0e0a01611201771a026b76220267322213" +
		"7b227061746368223a7b2262223a2278227d7d2a04672d6b343a0d0a05616c69636512047573657242060a016112012a" +
		"1a500a06632d672d6b35120d636d642e6b762e6372656174651a0e0a01611201771a026b7622026732220a7b22646f63" +
		"223a7b7d7d2a04672d6b353a0d0a05616c69636512047573657242060a016112012a1a570a06632d672d6b36120f636d" +
		"642e636f756e7465722e6164641a130a01611201771a07636f756e74657222026733220c7b22616d6f756e74223a317d" +
		"2a04672d6b363a0b0a03626f6212047573657242060a0162120177220408011002"
)

// goldenEntries exercise the built-in actors: accepted commands with events,
// a version conflict, a cross-tenant violation and a business rejection.
func goldenEntries() []engine.Entry {
	c, d := addr("counter", "g1"), addr("kv", "g2")
	foreign := cmd(addr("counter", "g3"), "add", "g-k6", map[string]int{"amount": 1})
	foreign.Security = userB
	return []engine.Entry{
		{Index: 1, At: 1_700_000_000_000, Commands: []actor.Command{
			cmd(c, "add", "g-k1", map[string]int{"amount": 3}),
			cmd(d, "create", "g-k2", `{"doc":{"a":1}}`),
		}},
		{Index: 2, At: 1_700_000_000_500, Commands: []actor.Command{
			withVersion(cmd(c, "add", "g-k3", map[string]int{"amount": 1}), 7),
			cmd(d, "patch", "g-k4", `{"patch":{"b":"x"}}`),
			cmd(d, "create", "g-k5", `{"doc":{}}`),
			foreign,
		}},
		{Index: 3, At: 1_700_000_001_000},
	}
}

func TestGolden_StoredBytesAndStateHash(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	for _, e := range goldenEntries() {
		r.apply(e)
	}
	check := func(name, want string, got []byte) {
		t.Helper()
		if h := hex.EncodeToString(got); h != want {
			t.Errorf("%s:\n got %s\nwant %s", name, h, want)
		}
	}
	h := r.eng.Meta().Hash
	check("state hash", goldenStateHash, h[:])

	recs := r.history(addr("kv", "g2"), true)
	var ev, rej []byte
	for _, rec := range recs {
		switch rec.Kind {
		case engine.HistoryEvent:
			if ev == nil {
				ev = rec.Data
			}
		case engine.HistoryRejection:
			rej = rec.Data
		}
	}
	check("stored event", goldenEvent, ev)
	check("stored rejection", goldenRejection, rej)

	res, ok, err := r.store.Result(addr("kv", "g2"), "g-k4")
	if err != nil || !ok {
		t.Fatalf("result g-k4: %v, %v", ok, err)
	}
	check("stored result", goldenResult, res)

	rows, err := r.store.Outbox(engine.Position{}, 1)
	if err != nil || len(rows) != 1 {
		t.Fatalf("outbox: %v, %v", rows, err)
	}
	check("outbox row", goldenOutbox, rows[0].Data)

	// The log entry as the shard's proposer builds it.
	e := goldenEntries()[1]
	le := &recordv1.LogEntry{Shard: 7, At: e.At, Relayed: &recordv1.Position{Index: 1, Ordinal: 2}}
	for i := range e.Commands {
		le.Commands = append(le.Commands, recordv1.FromCommand(&e.Commands[i]))
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(le)
	if err != nil {
		t.Fatal(err)
	}
	check("log entry", goldenLogEntry, b)
}
