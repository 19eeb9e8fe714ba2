// Package relay publishes a shard's outbox to JetStream. This is the one
// place the outbox path is described.
//
// Writers. The engine, applying a command entry, writes one outbox row per
// committed event (engine.OutboxEvent + pb.Event), per actor Send
// (engine.OutboxCommand + pb.Command) and per recorded rejection
// (engine.OutboxRejection + pb.Rejection, at its history record's position;
// not in the state hash), keyed by the entry's log position and
// an ordinal (engine.Store.PutOutbox; storage packs one entry's rows into one
// Badger value, storage/outbox.go). Every replica writes the same rows: they
// are part of the deterministic apply.
//
// Reader. Only the shard leader's relay reads them (shard.Shard.Outbox,
// woken by shard.Shard.Outboxed after each applied entry) and publishes
// them: events to their entity's subject on RHIZON_EVENTS, rejections to
// that subject plus ".rejected" (a violation: its offender's audit stream's,
// so it is never visible under the targeted tenant), Sends to the target
// shard's ingress subject (api/stream names them all). The ingress
// manager (package ingress) starts a relay beside each shard consumer it
// runs, that is for each shard this node leads.
//
// Ids. Each message carries a JetStream message id: an event's id (part of the
// committed event, the same on every replica), a rejection's log position
// (stream.RejectionMsgID), or for a Send the id derived from its
// target and idempotency key (ingress.Manager's msgID). JetStream's duplicate
// window drops a message published again with the same id.
//
// Cursor. The relay keeps its published position in memory and, every
// AckInterval, records it in the Raft log (shard.Shard.AckRelayed, usually
// carried by the next command entry). Applying that record, every replica
// deletes the rows at or before it (engine.Store.DeleteOutbox).
//
// Leader change. The new leader's relay starts after the last recorded
// position, so rows published but not yet recorded are published again:
// same ids, dropped as duplicates by JetStream (events) or replayed as
// results by the engine's idempotency (Sends). Nothing acknowledged is lost,
// since the rows stay until a record says they were published.
//
// Critical path. A command's answer never waits for a publish: the shard
// answers once the entry is applied, and the relay reads the committed rows
// afterwards, in pages of relayPage, publishing events in atomic batches
// where the events stream allows it (see Relay.publish).
//
// Direct Sends (direct.go, Config.Send, on unless a node runs with
// --stream-sends). A Send is submitted to its target's shard leader through
// the node's router instead of the ingress stream, and a page is handed on
// rather than waited for: its events to a lane that publishes page after
// page, its Sends to a sender where each waits only for the Send before it
// to the same entity. The ingress stream remains the path for a target
// shard whose subject still holds messages (an earlier leader's Sends, or
// one that failed to go direct), so that no Send overtakes one sent before
// it. The recorded cursor is then the lower of the events published and
// the first Send not yet delivered.
package relay
