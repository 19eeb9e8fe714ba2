package storage

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rhizon/rhizon/engine"
)

// resultWith encodes a result as the engine does: a few header fields, the
// events (field 7), the entry index and a retention stamp.
func resultWith(cmd string, events ...[]byte) []byte {
	b := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), cmd)
	b = protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.VarintType), 1)
	for _, e := range events {
		b = protowire.AppendBytes(protowire.AppendTag(b, 7, protowire.BytesType), e)
	}
	b = protowire.AppendVarint(protowire.AppendTag(b, 8, protowire.VarintType), 9)
	return protowire.AppendVarint(protowire.AppendTag(b, 12, protowire.VarintType), 1234)
}

// rawValues returns the stored values of one keyspace, concatenated.
func rawValues(t *testing.T, s *ShardStore, tag byte) []byte {
	t.Helper()
	var all []byte
	for k, v := range dump(t, s) {
		if k[0] == tag {
			all = append(all, v...)
		}
	}
	return all
}

func historyData(t *testing.T, s *ShardStore, a string) string {
	t.Helper()
	recs, _, _, err := s.History(addr("t", a), engine.Position{}, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprintf("%d.%d=%s", r.Pos.Index, r.Pos.Ordinal, r.Data))
	}
	return fmt.Sprint(out)
}

// A result repeats its command's events, which the same batch writes as
// history records: it is stored with references to them and read back as
// written (by the engine's duplicate check, the API, a snapshot), and a
// history sweep writes it out in full before it deletes a record it refers
// to.
func TestResultsReferToTheirHistoryRecords(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(3)
	a, b := addr("t", "a"), addr("t", "b")
	p := func(ord uint32) engine.Position { return engine.Position{Index: 9, Ordinal: ord} }
	ev := func(i int) []byte { return []byte(fmt.Sprintf("event-%d-payload", i)) }
	r1 := resultWith("cmd-1", ev(0), ev(1))
	r2 := resultWith("cmd-2", ev(2), []byte("event-not-in-history"))
	r3 := resultWith("cmd-3") // a rejection: no events
	commit(t, s, func(bt engine.Batch) {
		bt.AppendHistory(a, p(0), engine.HistoryEvent, ev(0))
		bt.AppendHistory(a, p(1), engine.HistoryEvent, ev(1))
		bt.PutResult(a, "key-1", r1)
		bt.AppendHistory(b, p(2), engine.HistoryEvent, ev(2))
		bt.PutResult(b, "key-2", r2)
		bt.AppendHistory(a, p(3), engine.HistoryRejection, []byte("rejection"))
		bt.PutResult(a, "key-3", r3)
	})
	results := func(s *ShardStore) {
		t.Helper()
		for _, c := range []struct {
			a    string
			key  string
			want []byte
		}{{"a", "key-1", r1}, {"b", "key-2", r2}, {"a", "key-3", r3}} {
			got, ok, err := s.Result(addr("t", c.a), c.key)
			if err != nil || !ok || !bytes.Equal(got, c.want) {
				t.Fatalf("Result(%s, %s) = %q, %v, %v; want %q", c.a, c.key, got, ok, err, c.want)
			}
			got, ok, err = s.NewBatch().(engine.BatchReader).Result(addr("t", c.a), c.key)
			if err != nil || !ok || !bytes.Equal(got, c.want) {
				t.Fatalf("batch Result(%s, %s) = %q, %v, %v; want %q", c.a, c.key, got, ok, err, c.want)
			}
		}
	}
	results(s)
	if raw := rawValues(t, s, tagResult); bytes.Contains(raw, ev(0)) || bytes.Contains(raw, ev(1)) || bytes.Contains(raw, ev(2)) ||
		!bytes.Contains(raw, []byte("event-not-in-history")) {
		t.Fatalf("stored results %q: want the history's events referred to, the other one kept", raw)
	}
	wantA := "[9.0=event-0-payload 9.1=event-1-payload 9.3=rejection]"
	if got := historyData(t, s, "a"); got != wantA {
		t.Fatalf("history of a = %s; want %s (records without the idempotency key kept beside them)", got, wantA)
	}
	if evs, _, _, err := s.Events(engine.Position{}, 10); err != nil || len(evs) != 3 || !bytes.Equal(evs[2].Data, ev(2)) {
		t.Fatalf("Events = %v, %v", evs, err)
	}
	if rows, err := s.ScanHistory(nil, 10); err != nil || len(rows) != 4 || !bytes.Equal(rows[0].Data, ev(0)) {
		t.Fatalf("ScanHistory = %v, %v", rows, err)
	}

	// A snapshot carries full results and plain history records.
	restored := openDB(t, t.TempDir()).Shard(3)
	if err := restored.Restore(snapshotReader(t, s)); err != nil {
		t.Fatal(err)
	}
	if raw := rawValues(t, restored, tagResult); !bytes.Contains(raw, ev(0)) || !bytes.Contains(raw, ev(2)) {
		t.Fatalf("the snapshot's results hold references: %q", raw)
	}
	if raw := rawValues(t, restored, tagHistory); bytes.Contains(raw, []byte("key-1")) {
		t.Fatalf("the snapshot's history records hold idempotency keys: %q", raw)
	}
	results(restored)

	// A sweep deletes a record key-1 refers to: key-1 is written out in full.
	commit(t, s, func(bt engine.Batch) { bt.DeleteHistory(a, p(0)) })
	results(s)
	if got, want := historyData(t, s, "a"), "[9.1=event-1-payload 9.3=rejection]"; got != want {
		t.Fatalf("history of a after the sweep = %s; want %s", got, want)
	}

	// key-2 expired and was replaced by a result referring to other
	// records: sweeping the record the old one referred to leaves it alone.
	r2b := resultWith("cmd-2b", ev(5))
	commit(t, s, func(bt engine.Batch) { bt.(engine.ResultDeleter).DeleteResult(b, "key-2") })
	commit(t, s, func(bt engine.Batch) {
		bt.AppendHistory(b, engine.Position{Index: 10}, engine.HistoryEvent, ev(5))
		bt.PutResult(b, "key-2", r2b)
	})
	commit(t, s, func(bt engine.Batch) { bt.DeleteHistory(b, p(2)) })
	if got, ok, err := s.Result(b, "key-2"); err != nil || !ok || !bytes.Equal(got, r2b) {
		t.Fatalf("Result(b, key-2) = %q, %v, %v; want the new result %q", got, ok, err, r2b)
	}
	if raw := rawValues(t, s, tagResult); bytes.Contains(raw, ev(5)) {
		t.Fatalf("the new key-2 was written out in full for a record it does not refer to: %q", raw)
	}

	// A sweep in the batch that also deletes the result leaves it deleted.
	at := engine.Position{Index: 11}
	commit(t, s, func(bt engine.Batch) {
		bt.AppendHistory(a, at, engine.HistoryEvent, ev(6))
		bt.PutResult(a, "key-4", resultWith("cmd-4", ev(6)))
	})
	commit(t, s, func(bt engine.Batch) {
		bt.DeleteHistory(a, at)
		bt.(engine.ResultDeleter).DeleteResult(a, "key-4")
	})
	if got, ok, err := s.Result(a, "key-4"); err != nil || ok {
		t.Fatalf("Result(a, key-4) after its deletion = %q, %v, %v; want none", got, ok, err)
	}
}
