package ingress

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// consumerGrace is how long a consumer may fail to bind before health says
// it is not running: binding again after a JetStream leader change or a
// shard leader change takes a second or two, which is no reason to page.
const consumerGrace = 3 * time.Second

// workerHealth is what the node's health reads of one shard's worker: since
// when each of its consumers fails to bind, and when its relay last had
// nothing left to publish.
type workerHealth struct {
	mu        sync.Mutex
	failures  map[string]failure // stream -> first failure since it was last bound
	lastCatch time.Time
}

type failure struct {
	since time.Time
	err   string
}

func (h *workerHealth) start(now time.Time) {
	h.mu.Lock()
	h.failures = map[string]failure{}
	h.lastCatch = now
	h.mu.Unlock()
}

func (h *workerHealth) failing(stream string, err error, now time.Time) {
	h.mu.Lock()
	f, ok := h.failures[stream]
	if !ok {
		f.since = now
	}
	f.err = err.Error()
	h.failures[stream] = f
	h.mu.Unlock()
}

func (h *workerHealth) bound(stream string) {
	h.mu.Lock()
	delete(h.failures, stream)
	h.mu.Unlock()
}

func (h *workerHealth) caughtUp(now time.Time) {
	h.mu.Lock()
	h.lastCatch = now
	h.mu.Unlock()
}

// consumer is "running", or why not: the streams whose consumer has failed
// to bind for longer than consumerGrace.
func (h *workerHealth) consumer(now time.Time) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var bad []string
	for stream, f := range h.failures {
		if d := now.Sub(f.since); d > consumerGrace {
			bad = append(bad, fmt.Sprintf("%s consumer failing for %s: %s", stream, d.Round(time.Second), f.err))
		}
	}
	if len(bad) == 0 {
		return "running"
	}
	sort.Strings(bad)
	return "not running: " + strings.Join(bad, "; ")
}

// relayLag is how long the relay has gone without catching up.
func (h *workerHealth) relayLag(now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Sub(h.lastCatch)
}

// ProbeShard completes a local replica's status (cluster.Node's
// SetReplicaProbe) with the state of its ingress consumer and outbox relay,
// when this node leads the shard.
func (m *Manager) ProbeShard(ss *pb.ShardStatus) {
	if ss.GetRole() != "Leader" {
		return
	}
	select {
	case <-m.ready:
	default:
		ss.Ingress = "not running: JetStream streams not created yet"
		return
	}
	// Reconcile holds the lock while it stops workers, which can take a
	// while; a status report does not wait for it and says nothing then.
	if !m.mu.TryLock() {
		return
	}
	w := m.workers[ss.GetShard()]
	m.mu.Unlock()
	if w == nil {
		// Leadership is at most one reconcile (100 ms) old: the worker
		// starts on the next one.
		ss.Ingress = "starting"
		return
	}
	if w.stopped() {
		ss.Ingress = "not running: stopped"
		return
	}
	now := time.Now()
	ss.Ingress = w.health.consumer(now)
	if st, d, down := m.connDown(now); down && d > consumerGrace && ss.Ingress == "running" {
		// While the client reconnects, a pull neither fails nor misses
		// heartbeats (nats.go pauses them): the consumer looks bound but
		// hears nothing.
		ss.Ingress = fmt.Sprintf("not running: NATS connection %s for %s", st, d.Round(time.Second))
	}
	if lag := w.health.relayLag(now); lag > time.Second {
		// A relay at work catches up every few milliseconds, an idle one
		// every AckInterval: below a second it is keeping up.
		ss.RelayLagMs = uint64(lag.Milliseconds())
	}
	m.metrics.mu.Lock()
	ss.RelayBacklog = uint32(m.metrics.backlogs[ss.GetShard()])
	m.metrics.mu.Unlock()
}

// connDown reports whether the node's NATS connection is down, and since
// when health first saw it so (each status report looks).
func (m *Manager) connDown(now time.Time) (nats.Status, time.Duration, bool) {
	st := m.cfg.Conn.Status()
	if st == nats.CONNECTED {
		m.downSince.Store(0)
		return st, 0, false
	}
	m.downSince.CompareAndSwap(0, now.UnixNano())
	return st, now.Sub(time.Unix(0, m.downSince.Load())), true
}
