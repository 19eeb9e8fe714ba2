package memstore

import (
	"bytes"
	"encoding/binary"
	"slices"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

// ScanHistory implements engine.HistorySweeper in the order of the Badger
// store's keys (address key, then index and ordinal big-endian), so a replay
// trims exactly what the replicas trimmed.
func (s *Store) ScanHistory(from []byte, limit int) ([]engine.HistoryRow, error) {
	keys := make([]string, 0, len(s.history))
	for k := range s.history { //rhizon:deterministic sorted below
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []engine.HistoryRow
	for _, k := range keys {
		for _, r := range s.history[k] {
			if len(out) >= limit {
				return out, nil
			}
			bk := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64([]byte(k), r.Pos.Index), r.Pos.Ordinal)
			if bytes.Compare(bk, from) < 0 {
				continue
			}
			out = append(out, engine.HistoryRow{Address: s.histAddr[k], Pos: r.Pos, Kind: r.Kind, Data: bytes.Clone(r.Data)})
		}
	}
	return out, nil
}

// HistoryTrimmed implements engine.HistorySweeper.
func (s *Store) HistoryTrimmed(a actor.Address) (engine.Position, error) {
	return s.trims[string(a.Key())], nil
}

// PutHistoryTrim implements engine.HistoryTrimmer.
func (b *batch) PutHistoryTrim(a actor.Address, pos engine.Position) {
	k := string(a.Key())
	b.add(func(s *Store) { s.trims[k] = pos })
}
