// Package storage keeps a node's durable data in two stores shared by every
// shard on the node: the state store (DB, a Badger database, one ShardStore
// per shard, implementing engine.Store) and the Raft store (RaftDB, one
// append-only write-ahead log of segment files with an index in memory, one
// LogStore per shard, implementing raft.LogStore and raft.StableStore; its
// format is in wal.go).
//
// Every key starts with the shard id (4 bytes big-endian) and a keyspace tag
// (1 byte). addr is actor.Address.Key(), which length-prefixes each part and
// is therefore self-delimiting: a field after it needs no length of its own,
// and one address's keys never share a prefix with another's.
//
// State store (SyncWrites off; the Raft log is the write-ahead log):
//
//	01 meta                                  -> index u64 | at i64 | hash [32]
//	02 addr                                  -> version u64 | state
//	03 addr | index u64 | ordinal u32        -> kind byte | record   (history;
//	                                            an event a result refers to:
//	                                            0x81 | key length | key | event)
//	04 addr | idempotency key                -> result (events in it by position: resultref.go)
//	05 at^(1<<63) u64 | addr | name          -> payload              (timers by due time)
//	06 addr | name                           -> at i64 | payload     (timers by entity)
//	07 index u64 | ordinal u32               -> row, or rows of one index packed
//	                                            (outbox; an event's row refers to
//	                                            its history record: outbox.go)
//	F0 seq u32                               -> staged op of a large batch (internal)
//	F1                                       -> large batch committed (internal)
//	F2                                       -> restore in progress (internal)
//
// Raft store before the write-ahead log (a Badger database with SyncWrites
// on, copied into the log when OpenRaft finds one):
//
//	01 index u64                             -> encoded raft.Log
//	02 key                                   -> value (stable store)
//
// Integers are big-endian so byte order is numeric order; the due time has its
// sign bit flipped so negative times sort first.
package storage
