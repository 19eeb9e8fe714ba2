package shard

import (
	"fmt"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
)

func req(tenant string, i int) *request {
	return &request{cmd: actor.Command{ID: fmt.Sprintf("%s-%d", tenant, i), Address: actor.Address{Tenant: tenant}}, done: make(chan outcome, 1)}
}

func ids(rs []*request) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.cmd.ID
	}
	return out
}

// A flood from tenant a, queued first, must not push tenant b's commands
// behind it: the proposer's next entry interleaves the tenants, and each
// tenant's commands keep their order.
func TestProposerQueueRoundRobinsTenants(t *testing.T) {
	q := newFairQueue(8192)
	for i := range 1000 {
		if !q.push(req("a", i)) {
			t.Fatalf("push a-%d refused", i)
		}
	}
	for i := range 3 {
		q.push(req("b", i))
	}
	for i := range 2 {
		q.push(req("c", i))
	}
	got := ids(q.pop(nil, 8))
	want := []string{"a-0", "b-0", "c-0", "a-1", "b-1", "c-1", "a-2", "b-2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("first entry %v; want %v", got, want)
	}
	// b and c are done after one more; the rest is a's, in order.
	got = ids(q.pop(nil, 5))
	want = []string{"a-3", "a-4", "a-5", "a-6", "a-7"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("second entry %v; want %v", got, want)
	}
	if q.len() != 1000-8 {
		t.Fatalf("len %d", q.len())
	}
	rest := q.pop(nil, 2000)
	for i, r := range rest {
		if r.cmd.ID != fmt.Sprintf("a-%d", i+8) {
			t.Fatalf("a's order broken at %d: %s", i, r.cmd.ID)
		}
	}
	if q.len() != 0 || len(q.ring) != 0 || len(q.tenants) != 0 {
		t.Fatalf("queue not empty: %d %d %d", q.len(), len(q.ring), len(q.tenants))
	}
}

// A newcomer joins the tail of the rotation (as in deficit round-robin): it
// is served once every tenant already waiting has had a turn, never ahead of
// them; a tenant that empties leaves the rotation.
func TestProposerQueueNewcomerJoinsRoundEnd(t *testing.T) {
	q := newFairQueue(100)
	for i := range 3 {
		q.push(req("a", i))
		q.push(req("b", i))
	}
	got := ids(q.pop(nil, 1)) // a-0; b is next
	q.push(req("c", 0))
	got = append(got, ids(q.pop(nil, 5))...)
	want := []string{"a-0", "b-0", "a-1", "c-0", "b-1", "a-2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("order %v; want %v", got, want)
	}
}

// Admission: a flood fills its own share of the queue; another tenant can
// still queue, and the queue stays bounded.
func TestProposerQueueAdmitsQuietTenantWhenFlooded(t *testing.T) {
	q := newFairQueue(10)
	n := 0
	for q.push(req("a", n)) {
		n++
	}
	if n != 10 {
		t.Fatalf("flooder queued %d; want the capacity 10", n)
	}
	for i := range 5 {
		if !q.push(req("b", i)) {
			t.Fatalf("quiet tenant refused at %d with the queue full of another tenant's commands", i)
		}
	}
	if q.push(req("b", 5)) {
		t.Fatal("b queued past its share (10 / 2 tenants)")
	}
	if q.push(req("a", n)) {
		t.Fatal("flooder queued past the capacity")
	}
	for i := range 100 {
		q.push(req(fmt.Sprint("t", i), 0))
	}
	if q.len() > 20 {
		t.Fatalf("queue holds %d; the bound is twice the capacity", q.len())
	}
}

// awaitFill ends as soon as fill commands are queued, after max otherwise,
// and reports a stop.
func TestProposerAwaitFill(t *testing.T) {
	q := newFairQueue(8192)
	stop := make(chan struct{})
	go func() {
		for i := range 64 {
			q.push(req("a", i))
		}
	}()
	start := time.Now()
	if !awaitFill(q, 64, 5*time.Second, stop) {
		t.Fatal("awaitFill reported a stop")
	}
	if d := time.Since(start); d >= 4*time.Second {
		t.Fatalf("awaitFill waited %v with 64 of 64 commands queued", d)
	}
	if n := q.len(); n != 64 {
		t.Fatalf("awaitFill returned with %d queued, want 64", n)
	}

	q = newFairQueue(8192)
	q.push(req("a", 0))
	start = time.Now()
	if !awaitFill(q, 64, 50*time.Millisecond, stop) {
		t.Fatal("awaitFill reported a stop")
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("awaitFill returned after %v with 1 of 64 commands queued, before its 50 ms", d)
	}

	close(stop)
	if awaitFill(q, 64, time.Hour, stop) {
		t.Fatal("awaitFill on a stopped shard did not report the stop")
	}
}
