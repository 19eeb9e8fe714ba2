package engine

import "github.com/rhizon/rhizon/actor"

// Store is the engine's view of one shard's durable state. The engine is its
// only writer and calls it from one goroutine. Reads observe everything written
// by committed Batches and nothing of an open one.
//
// Implementations: storage.ShardStore (Badger). A Batch commit need not be
// fsynced by itself: the Raft log is the write-ahead log, and the shard syncs
// the store before it lets Raft compact the log (see DESIGN.md §3).
type Store interface {
	// Entity returns the entity's record; a zero Entity when it has none.
	Entity(addr actor.Address) (Entity, error)
	// Result returns the encoded result stored under (addr, idempotency key).
	Result(addr actor.Address, key string) ([]byte, bool, error)
	// Timer returns the entity's timer name, if set.
	Timer(addr actor.Address, name string) (Timer, bool, error)
	// DueTimers returns up to limit timers with At <= upTo, ordered by
	// (At, address key, name).
	DueTimers(upTo int64, limit int) ([]Timer, error)
	// Meta returns the applied position and state hash (zero when new).
	Meta() (Meta, error)
	// NewBatch starts an atomic write.
	NewBatch() Batch
}

// Batch collects the writes of one log entry; Commit applies all or nothing.
// Byte slices passed in stay valid and unchanged only until Commit or Discard
// returns (the engine then reuses their memory for the next entry): a Batch
// that keeps one longer must copy it.
type Batch interface {
	PutEntity(addr actor.Address, e Entity)
	// AppendHistory adds an audit record (an event or a rejection) to the
	// entity's history at log position (index, ordinal).
	AppendHistory(addr actor.Address, pos Position, kind HistoryKind, data []byte)
	// DeleteHistory removes the record at pos (the oldest of an audit
	// stream, which is bounded).
	DeleteHistory(addr actor.Address, pos Position)
	PutResult(addr actor.Address, key string, data []byte)
	// PutOutbox adds a row for the relay to publish: an event or a command
	// for another entity, starting with its kind byte (OutboxEvent,
	// OutboxCommand; never 0, which the store may use for its own framing).
	// Rows come in position order.
	PutOutbox(pos Position, data []byte)
	// DeleteOutbox removes every outbox row at or before upTo: the relay
	// published them. Rows before from are already gone (from is where the
	// previous delete ended, or zero), so the scan may start there instead
	// of walking the tombstones of every earlier delete.
	DeleteOutbox(from, upTo Position)
	PutTimer(t Timer)
	DeleteTimer(t Timer)
	SetMeta(m Meta)
	Commit() error
	Discard()
}

// BatchReader is an optional Batch capability: the Store's lookups served
// from one read snapshot taken when the batch began, which can be much cheaper
// than a read transaction per lookup. A snapshot is enough because the engine
// is the only writer and commits each entry before it begins the next.
type BatchReader interface {
	Entity(addr actor.Address) (Entity, error)
	Result(addr actor.Address, key string) ([]byte, bool, error)
	Timer(addr actor.Address, name string) (Timer, bool, error)
	DueTimers(upTo int64, limit int) ([]Timer, error)
}

// IndexBatch is an optional Batch capability: the document indexes (see
// actor.Indexer). The engine writes an entity's index changes in the batch
// that writes its state, so the indexes always match the states. They are
// not fed to the state hash: they are a pure function of the states, which
// are.
type IndexBatch interface {
	PutIndex(addr actor.Address, e actor.IndexEntry)
	DeleteIndex(addr actor.Address, e actor.IndexEntry)
}

// Entity is one entity's stored record (declared in actor so that the
// gateway need not link the engine).
type Entity = actor.Entity

// Timer is a durable timer of one entity.
type Timer struct {
	Address actor.Address
	Name    string
	At      int64
	Payload []byte
}

// Meta is the applied position of a shard's store and its state hash chain.
type Meta struct {
	Index uint64   // last applied raft index
	At    int64    // logical time of that entry
	Hash  [32]byte // hash chain over every entry's writes up to Index
}

// Position is a place in a shard's log: the raft index of the entry and the
// ordinal of the record within it (declared in actor, like Entity).
type Position = actor.Position

// HistoryKind tells an event record from a rejection record.
type HistoryKind byte

// The history record kinds. Their values are stored; never renumber them.
const (
	HistoryEvent     HistoryKind = 1
	HistoryRejection HistoryKind = 2
)
