// Package recordv1 holds the records the engine and the shard store, hash and
// replicate (record.proto): the Raft log entry, events, rejections, results
// and outbox commands, and their conversions from the actor package's types.
// It is messages only, so the deterministic core links no gRPC; the public
// API (rhizonv1) converts to and from it. Its bytes are a storage format:
// see record.proto before changing a field.
package recordv1
