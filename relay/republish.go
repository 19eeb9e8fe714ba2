package relay

import (
	"context"
	"fmt"

	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/storage"
)

// Republish publishes events read back from the shard's history
// (storage.ShardStore.Events) exactly as Run published them the first time:
// the same subject, body, headers and message id, through the same publish
// path. So it rebuilds RHIZON_EVENTS after a purge or loss (the stream is a
// projection; the shard's history is the record), and an event still in
// JetStream's duplicate window is dropped as a duplicate. It returns how
// many events the stream acknowledged (duplicates included).
func Republish(ctx context.Context, cfg Config, shard uint32, events []storage.HistoryRecord) (int, error) {
	rows := make([]storage.OutboxRow, 0, len(events))
	for _, ev := range events {
		if ev.Kind != engine.HistoryEvent {
			return 0, fmt.Errorf("republish: record at %v is not an event", ev.Pos)
		}
		// The engine writes the same event bytes to history and, after its
		// kind byte, to the outbox row (engine/command.go).
		row := make([]byte, 1+len(ev.Data))
		row[0] = engine.OutboxEvent
		copy(row[1:], ev.Data)
		rows = append(rows, storage.OutboxRow{Pos: ev.Pos, Data: row})
	}
	if len(rows) == 0 {
		return 0, nil
	}
	r := New(shardID(shard), cfg)
	if err := r.publish(ctx, rows); err != nil {
		return 0, err
	}
	return len(rows), nil
}

// shardID is a Source that only names its shard: publish needs no more.
type shardID uint32

func (s shardID) ID() uint32 { return uint32(s) }
func (shardID) Outbox(engine.Position, int) ([]storage.OutboxRow, error) {
	return nil, fmt.Errorf("republish reads no outbox")
}
func (shardID) AckRelayed(context.Context, engine.Position) error {
	return fmt.Errorf("republish records no progress")
}
func (shardID) Outboxed() <-chan struct{} { return nil }
