// Package ingress feeds shards from NATS JetStream: the per-shard ingress
// consumers (commands from decoupled producers, SubmitAsync and actors'
// Sends), the outbox relay (committed events and Sends) and Watch. The
// embedded server is natsserver's; the wire's names are api/stream's.
// The Raft log stays the source of truth: JetStream is the transport.
package ingress
