package relay

import (
	"context"
	"sync"
	"time"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/tracectx"
)

// Actors' Sends are submitted to their target's shard leader directly
// (Config.Send): a hop of a saga is then one Raft commit on the target
// instead of a replicated JetStream write, a delivery, an ack and the work
// queue's replicated removal before that commit. JetStream stays the path
// whenever the direct one is not sure to keep a target entity's Sends in the
// order they were sent:
//
//   - a target shard starts on the stream: the relay goes direct to it only
//     once its ingress subject holds no message (Config.Drained), that is
//     once every Send an earlier relay published to it has applied (a
//     message leaves the work-queue stream when its command committed);
//   - a direct Send that fails (no leader within the wait, overloaded, an
//     outcome unknown) goes to the stream, and so does every later Send to
//     that shard, until its subject is drained again.
//
// Exactly-once is the idempotency key's: a Send delivered both ways, or
// again by the next leader's relay, replays its first result.

// directWait bounds one direct Send; past it the Send goes to the stream.
const directWait = 5 * time.Second

// drainedEvery is Config.DrainedEvery's default.
const drainedEvery = time.Second

// directParallel bounds the direct Sends in flight at once.
const directParallel = 128

// route is a relay's view of one target shard: direct, or on the stream
// and asked again at checked+drainedEvery.
type route struct {
	direct  bool
	checked time.Time
}

// directTo reports whether Sends to shard may go direct now.
func (r *Relay) directTo(ctx context.Context, shard uint32) bool {
	if r.routes == nil {
		r.routes = map[uint32]*route{}
	}
	rt := r.routes[shard]
	if rt == nil {
		rt = &route{}
		r.routes[shard] = rt
	}
	every := r.cfg.DrainedEvery
	if every <= 0 {
		every = drainedEvery
	}
	if rt.direct || time.Since(rt.checked) < every {
		return rt.direct
	}
	rt.checked = time.Now()
	dctx, cancel := context.WithTimeout(ctx, directWait)
	defer cancel()
	ok, err := r.cfg.Drained(dctx, shard)
	if err != nil {
		r.cfg.Log.Debug("outbox relay: is the target's ingress subject drained", "shard", shard, "err", err)
	}
	rt.direct = ok && err == nil
	return rt.direct
}

// toStream puts shard's Sends back on the stream.
func (r *Relay) toStream(shard uint32) {
	r.routes[shard] = &route{checked: time.Now()}
}

// sendDirect delivers what it can of cmds (one page's Sends, in order)
// through Config.Send, in waves that hold at most one Send per target
// entity, and returns the rest, in order, for the stream. A target entity's
// Sends delivered directly always come before those returned.
func (r *Relay) sendDirect(ctx context.Context, cmds []outMsg) (rest []outMsg) {
	if r.cfg.Send == nil || len(cmds) == 0 {
		return cmds
	}
	direct := make([]bool, len(cmds))
	for i, om := range cmds {
		direct[i] = om.cmd != nil && r.directTo(ctx, om.shard)
	}
	done := make([]bool, len(cmds))
	failed := map[uint32]bool{} // target shards that fell back during this page
	for {
		seen := map[string]bool{}
		var wave []int
		for i, om := range cmds {
			if done[i] || !direct[i] || seen[om.key] {
				continue
			}
			seen[om.key] = true
			if failed[om.shard] {
				continue
			}
			wave = append(wave, i)
		}
		if len(wave) == 0 {
			break
		}
		errs := make([]error, len(wave))
		var wg sync.WaitGroup
		sem := make(chan struct{}, directParallel)
		for j, i := range wave {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				sctx, cancel := context.WithTimeout(ctx, directWait)
				defer cancel()
				errs[j] = r.cfg.Send(sctx, cmds[i].cmd.ToActor())
			})
		}
		wg.Wait()
		delivered := 0
		for j, i := range wave {
			if errs[j] != nil {
				if !failed[cmds[i].shard] {
					r.cfg.Log.Debug("outbox relay: a direct Send failed; this shard's Sends go through JetStream until its subject is drained",
						"target_shard", cmds[i].shard, "err", errs[j])
				}
				failed[cmds[i].shard] = true
				continue
			}
			done[i] = true
			delivered++
		}
		if delivered > 0 && r.cfg.Sent != nil {
			r.cfg.Sent(ctx, r.src.ID(), delivered)
		}
	}
	for s := range failed {
		r.toStream(s)
	}
	for i, om := range cmds {
		if !done[i] {
			rest = append(rest, om)
		}
	}
	return rest
}

// directCommand is the Send of om as the target's leader applies it: its
// trace continues under the relay's span when it has one.
func directCommand(om *outMsg) {
	if tp := om.msg.Header.Get(tracectx.Header); tp != "" {
		om.cmd.Traceparent = tp
	}
}

// validSend reports whether c passes the checks the ingress worker makes
// before it submits a command; one that does not keeps the stream's path to
// its dead letter.
func validSend(c *pb.Command) bool {
	cmd := c.ToActor()
	return cmd.ID != "" && cmd.IdempotencyKey != "" && cmd.Validate() == nil
}
