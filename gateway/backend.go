package gateway

import (
	"context"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Backend is what the gateway needs from a node: routing to the shard that
// owns an address and the shard operations. The node (package cluster)
// implements it. All methods are safe for concurrent use.
//
// Errors are the write-outcome sentinels of api/outcome (ErrNotLeader,
// ErrUnknownOutcome, ErrOverloaded, ErrClosed, ErrHalted; shard's names
// alias them), possibly wrapped, or the context's error.
type Backend interface {
	// Registry is the node's actor registry (read-only).
	Registry() *actor.Registry
	// ShardOf maps an address to its shard.
	ShardOf(addr actor.Address) uint32
	// Submit proposes cmd (already validated and authorized, with id,
	// idempotency key and security context set) and waits for its Result.
	Submit(ctx context.Context, cmd actor.Command) (actor.Result, error)
	// Get reads an entity. Linearizable reads confirm leadership and wait for
	// the applied index to reach the commit index; stale reads do not.
	Get(ctx context.Context, addr actor.Address, stale bool) (ent actor.Entity, appliedIndex uint64, err error)
	// History reads an entity's audit records after pos (exclusive), at most
	// limit of them; more reports whether further records exist.
	History(ctx context.Context, addr actor.Address, after actor.Position, limit int, includeRejections, stale bool) (recs []*pb.HistoryRecord, next actor.Position, more bool, err error)
	// Status reports the node and its shards.
	Status(ctx context.Context) (*pb.StatusResponse, error)
	// Drain starts (on) or cancels (off) moving every replica and leadership
	// off node id.
	Drain(ctx context.Context, id string, on bool) error
}

// HistoryPager is the optional Backend capability History uses to report
// trimmed history (HistoryResponse.trimmed_before): History plus trimmed,
// the last position history retention deleted for the entity (zero when
// none), so older records are known to be gone, not missing.
type HistoryPager interface {
	HistoryPage(ctx context.Context, addr actor.Address, after actor.Position, limit int, includeRejections, stale bool) (recs []*pb.HistoryRecord, next actor.Position, more bool, trimmed actor.Position, err error)
}

// historyPage reads a History page, with the trim mark when b can say it.
func historyPage(ctx context.Context, b Backend, addr actor.Address, after actor.Position, limit int, rejections, stale bool) ([]*pb.HistoryRecord, actor.Position, bool, actor.Position, error) {
	if hp, ok := b.(HistoryPager); ok {
		return hp.HistoryPage(ctx, addr, after, limit, rejections, stale)
	}
	recs, next, more, err := b.History(ctx, addr, after, limit, rejections, stale)
	return recs, next, more, actor.Position{}, err
}
