package storage

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/engine"
)

// outboxValues returns the shard's outbox as stored: each Badger key's
// position and whether its value is packed.
func outboxValues(t *testing.T, s *ShardStore) (keys []engine.Position, packed []bool) {
	t.Helper()
	p := tagPrefix(s.id, tagOutbox)
	err := s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = p
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			pos, ok := parsePos(it.Item().Key()[len(p):])
			if !ok {
				return fmt.Errorf("bad key %x", it.Item().Key())
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			keys = append(keys, pos)
			packed = append(packed, len(v) > 0 && v[0] == outboxPacked)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys, packed
}

func rowsString(rows []OutboxRow) string {
	var b bytes.Buffer
	for _, r := range rows {
		fmt.Fprintf(&b, "%d.%d=%s ", r.Pos.Index, r.Pos.Ordinal, r.Data)
	}
	return b.String()
}

func TestOutboxRowsOfOneIndexShareOneValue(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(3)
	commit(t, s, func(b engine.Batch) {
		b.PutOutbox(engine.Position{Index: 7, Ordinal: 1}, []byte("Ea"))
		b.PutOutbox(engine.Position{Index: 7, Ordinal: 3}, []byte("Cb"))
		b.PutOutbox(engine.Position{Index: 7, Ordinal: 4}, []byte("Ec"))
	})
	commit(t, s, func(b engine.Batch) { b.PutOutbox(engine.Position{Index: 8, Ordinal: 2}, []byte("Ed")) })

	keys, packed := outboxValues(t, s)
	if want := []engine.Position{{Index: 7, Ordinal: 4}, {Index: 8, Ordinal: 2}}; fmt.Sprint(keys) != fmt.Sprint(want) ||
		!packed[0] || packed[1] {
		t.Fatalf("stored keys %v packed %v; want %v, only the first packed", keys, packed, want)
	}
	all := "7.1=Ea 7.3=Cb 7.4=Ec 8.2=Ed "
	if rows, err := s.Outbox(engine.Position{}, 100); err != nil || rowsString(rows) != all {
		t.Fatalf("Outbox = %q, %v; want %q", rowsString(rows), err, all)
	}
	// Pages end inside a packed value and resume after their last row.
	var got []OutboxRow
	var after engine.Position
	for range 10 { // 4 rows in pages of 2; a reader stuck on a page must not hang the test
		rows, err := s.Outbox(after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 0 {
			break
		}
		got = append(got, rows...)
		after = rows[len(rows)-1].Pos
	}
	if rowsString(got) != all {
		t.Fatalf("paged Outbox = %q; want %q", rowsString(got), all)
	}

	// A delete ending inside a packed value keeps exactly its later rows.
	commit(t, s, func(b engine.Batch) { b.DeleteOutbox(engine.Position{}, engine.Position{Index: 7, Ordinal: 1}) })
	if rows, _ := s.Outbox(engine.Position{}, 100); rowsString(rows) != "7.3=Cb 7.4=Ec 8.2=Ed " {
		t.Fatalf("after delete to 7.1: %q", rowsString(rows))
	}
	commit(t, s, func(b engine.Batch) { b.DeleteOutbox(engine.Position{}, engine.Position{Index: 7, Ordinal: 3}) })
	if rows, _ := s.Outbox(engine.Position{}, 100); rowsString(rows) != "7.4=Ec 8.2=Ed " {
		t.Fatalf("after delete to 7.3: %q", rowsString(rows))
	}
	if keys, packed := outboxValues(t, s); len(keys) != 2 || packed[0] {
		t.Fatalf("after delete to 7.3 the stored values are %v packed %v; want the lone 7.4 unpacked", keys, packed)
	}
	commit(t, s, func(b engine.Batch) { b.DeleteOutbox(engine.Position{}, engine.Position{Index: 8, Ordinal: 2}) })
	if keys, _ := outboxValues(t, s); len(keys) != 0 {
		t.Fatalf("after delete to 8.2 the outbox holds %v", keys)
	}
}

func TestOutboxPacksBoundedValues(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(3)
	row := bytes.Repeat([]byte("E"), 100<<10)
	commit(t, s, func(b engine.Batch) {
		for ord := uint32(1); ord <= 7; ord++ {
			b.PutOutbox(engine.Position{Index: 2, Ordinal: ord}, row)
		}
	})
	keys, _ := outboxValues(t, s)
	// 100 KiB rows, at most 256 KiB a value: 2, 2, 2, then the lone 7th.
	if want := "[{2 2} {2 4} {2 6} {2 7}]"; fmt.Sprint(keys) != want {
		t.Fatalf("stored keys %v; want %s", keys, want)
	}
	rows, err := s.Outbox(engine.Position{}, 100)
	if err != nil || len(rows) != 7 {
		t.Fatalf("Outbox = %d rows, %v", len(rows), err)
	}
	for i, r := range rows {
		if r.Pos.Ordinal != uint32(i+1) || !bytes.Equal(r.Data, row) {
			t.Fatalf("row %d at %v holds %d bytes", i, r.Pos, len(r.Data))
		}
	}
}

func TestOutboxRejectsACorruptPackedValue(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(3)
	good := packOutbox([]OutboxRow{{Pos: engine.Position{Index: 5, Ordinal: 1}, Data: []byte("Ea")},
		{Pos: engine.Position{Index: 5, Ordinal: 2}, Data: []byte("Eb")}})
	for name, v := range map[string][]byte{
		"truncated":           good[:len(good)-1],
		"ends before its key": good[:len(good)-4],
		"ordinal past key":    append(append([]byte{outboxPacked}, 9, 1), 'E'),
		"out of order":        {outboxPacked, 2, 1, 'E', 1, 1, 'E'},
	} {
		t.Run(name, func(t *testing.T) {
			err := s.db().Update(func(txn *badger.Txn) error {
				return txn.Set(outboxKey(s.id, engine.Position{Index: 5, Ordinal: 2}), v)
			})
			if err != nil {
				t.Fatal(err)
			}
			if rows, err := s.Outbox(engine.Position{}, 10); !errors.Is(err, errCorruptKey) {
				t.Fatalf("Outbox = %q, %v; want errCorruptKey", rowsString(rows), err)
			}
		})
	}
}

// An event's outbox row repeats its history record: it is stored as a
// reference to the record and read back as written, from the store, from a
// snapshot (which carries it in full), and after a sweep deletes the record
// before the relay published the row.
func TestOutboxEventRowsReferToTheirHistoryRecords(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(3)
	a, b := addr("t", "a"), addr("t", "b")
	p := func(ord uint32) engine.Position { return engine.Position{Index: 5, Ordinal: ord} }
	ev1, ev2, rj := []byte("event-one-payload"), []byte("event-two-payload"), []byte("rejection-payload")
	commit(t, s, func(bt engine.Batch) {
		bt.AppendHistory(a, p(0), engine.HistoryEvent, ev1)
		bt.PutOutbox(p(0), append([]byte{engine.OutboxEvent}, ev1...))
		bt.AppendHistory(b, p(1), engine.HistoryRejection, rj)
		bt.PutOutbox(p(1), append([]byte{engine.OutboxRejection}, rj...))
		bt.PutOutbox(p(2), []byte("Csend-payload"))
		bt.AppendHistory(b, p(3), engine.HistoryEvent, ev2)
		bt.PutOutbox(p(3), append([]byte{engine.OutboxEvent}, ev2...))
		bt.AppendHistory(a, p(4), engine.HistoryEvent, []byte("event-four"))
		bt.PutOutbox(p(4), []byte("Enot-the-history-record")) // not a repeat: kept in full
	})
	want := "5.0=Eevent-one-payload 5.1=Rrejection-payload 5.2=Csend-payload 5.3=Eevent-two-payload 5.4=Enot-the-history-record "
	if rows, err := s.Outbox(engine.Position{}, 100); err != nil || rowsString(rows) != want {
		t.Fatalf("Outbox = %q, %v; want %q", rowsString(rows), err, want)
	}
	raw := rawValues(t, s, tagOutbox)
	for _, in := range []string{"event-one-payload", "event-two-payload"} {
		if bytes.Contains(raw, []byte(in)) {
			t.Fatalf("the outbox stores %q, which its history record already holds", in)
		}
	}
	for _, in := range []string{"rejection-payload", "send-payload", "not-the-history-record"} {
		if !bytes.Contains(raw, []byte(in)) {
			t.Fatalf("the outbox lost %q", in)
		}
	}

	// A snapshot carries full rows, as a build without references reads them.
	restored := openDB(t, t.TempDir()).Shard(3)
	if err := restored.Restore(snapshotReader(t, s)); err != nil {
		t.Fatal(err)
	}
	if raw := rawValues(t, restored, tagOutbox); !bytes.Contains(raw, ev1) || !bytes.Contains(raw, ev2) {
		t.Fatalf("the snapshot's outbox holds references, not rows: %q", raw)
	}
	if rows, err := restored.Outbox(engine.Position{}, 100); err != nil || rowsString(rows) != want {
		t.Fatalf("restored Outbox = %q, %v; want %q", rowsString(rows), err, want)
	}

	// A sweep deletes the first event's record while its row waits: the row
	// is written out in full and still published as it was.
	commit(t, s, func(bt engine.Batch) { bt.DeleteHistory(a, p(0)) })
	if rows, err := s.Outbox(engine.Position{}, 100); err != nil || rowsString(rows) != want {
		t.Fatalf("Outbox after the sweep = %q, %v; want %q", rowsString(rows), err, want)
	}
	if recs, _, _, err := s.History(a, engine.Position{}, 10, true); err != nil || len(recs) != 1 {
		t.Fatalf("history of a = %d records, %v; want the one the sweep left", len(recs), err)
	}

	// A sweep in the batch that also deletes the published rows leaves them
	// deleted.
	commit(t, s, func(bt engine.Batch) {
		bt.DeleteHistory(b, p(3))
		bt.DeleteOutbox(engine.Position{}, p(4))
	})
	if rows, err := s.Outbox(engine.Position{}, 100); err != nil || len(rows) != 0 {
		t.Fatalf("Outbox after its rows were deleted = %q, %v; want none", rowsString(rows), err)
	}
}
