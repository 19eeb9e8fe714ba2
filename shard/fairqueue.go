package shard

import "sync"

// fairQueue is the proposer's queue: one FIFO per tenant, drained round-robin
// (deficit round-robin with a quantum of one command, every command costing
// the same), so a tenant flooding the shard takes its turn like everyone else
// and cannot push another tenant's commands behind thousands of its own.
// Commands of one tenant keep their order.
//
// Admission is fair too: past cap commands in all, a tenant may still queue
// while it holds less than its share (cap divided among the tenants with
// queued commands), so a flood fills only the flooder's part. The queue
// holds at most 2*cap commands.
type fairQueue struct {
	mu      sync.Mutex
	cap     int
	n       int
	tenants map[string]*tenantFIFO
	ring    []*tenantFIFO // tenants with queued commands, in turn order
	next    int           // index in ring of the tenant whose turn is next
	ready   chan struct{} // signalled when a command is pushed
}

type tenantFIFO struct {
	name string
	reqs []*request
	head int
}

func (t *tenantFIFO) len() int { return len(t.reqs) - t.head }

func newFairQueue(cap int) *fairQueue {
	return &fairQueue{cap: cap, tenants: map[string]*tenantFIFO{}, ready: make(chan struct{}, 1)}
}

// push queues r, or reports false when the queue is full for r's tenant.
func (q *fairQueue) push(r *request) bool {
	tenant := r.cmd.Address.Tenant
	q.mu.Lock()
	t := q.tenants[tenant]
	held, active := 0, len(q.ring)
	if t != nil {
		held = t.len()
	} else {
		active++
	}
	if q.n >= q.cap && (held >= max(1, q.cap/active) || q.n >= 2*q.cap) {
		q.mu.Unlock()
		return false
	}
	if t == nil {
		t = &tenantFIFO{name: tenant}
		q.tenants[tenant] = t
		// A newcomer goes last in the current round.
		q.ring = append(q.ring, nil)
		copy(q.ring[q.next+1:], q.ring[q.next:])
		q.ring[q.next] = t
		q.next = (q.next + 1) % len(q.ring)
	}
	t.reqs = append(t.reqs, r)
	q.n++
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// pop appends up to max commands to batch, one per tenant in turn, and
// returns it.
func (q *fairQueue) pop(batch []*request, max int) []*request {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(batch) < max && len(q.ring) > 0 {
		if q.next >= len(q.ring) {
			q.next = 0
		}
		t := q.ring[q.next]
		batch = append(batch, t.reqs[t.head])
		t.reqs[t.head] = nil
		t.head++
		q.n--
		if t.len() == 0 {
			delete(q.tenants, t.name)
			q.ring = append(q.ring[:q.next], q.ring[q.next+1:]...)
			continue // the next tenant moved into this slot
		}
		if t.head > 64 && t.head*2 > len(t.reqs) {
			t.reqs = append(t.reqs[:0], t.reqs[t.head:]...)
			t.head = 0
		}
		q.next++
	}
	return batch
}

// len is the number of queued commands.
func (q *fairQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
