package shard

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
)

// HistoryRecord is one decoded row of an entity's history: exactly one of
// Event and Rejection is set.
type HistoryRecord struct {
	Pos       engine.Position
	Event     *recordv1.Event
	Rejection *recordv1.Rejection
}

// History reads the entity's records after position after (the zero Position
// means from the start), at most limit of them, skipping rejections unless
// includeRejections, and decodes each by its kind: the row format is the
// shard's, so callers never see it. next and more are the store's.
func (s *Shard) History(addr actor.Address, after engine.Position, limit int, includeRejections bool) (recs []HistoryRecord, next engine.Position, more bool, err error) {
	rows, next, more, err := s.store.History(addr, after, limit, includeRejections)
	if err != nil {
		return nil, after, false, err
	}
	out := make([]HistoryRecord, 0, len(rows))
	for _, r := range rows {
		rec := HistoryRecord{Pos: r.Pos}
		switch r.Kind {
		case engine.HistoryEvent:
			rec.Event = &recordv1.Event{}
			if err := proto.Unmarshal(r.Data, rec.Event); err != nil {
				return nil, after, false, fmt.Errorf("shard: decode event at %v: %w", r.Pos, err)
			}
		case engine.HistoryRejection:
			rec.Rejection = &recordv1.Rejection{}
			if err := proto.Unmarshal(r.Data, rec.Rejection); err != nil {
				return nil, after, false, fmt.Errorf("shard: decode rejection at %v: %w", r.Pos, err)
			}
		default:
			// Unknown kinds were skipped before the move into shard too.
			continue
		}
		out = append(out, rec)
	}
	return out, next, more, nil
}
