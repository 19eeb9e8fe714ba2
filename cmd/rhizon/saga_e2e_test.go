package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

// natsURL is the node's embedded NATS URL with the node credentials, which
// reading the streams needs.
func (p *nodeProc) natsURL(t testing.TB) string {
	t.Helper()
	u, err := natsNodeURLs(e2eSecret, p.nats, false)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// withNATS gives every node of c an embedded NATS server, clustered with the
// others' over routes (streams with 3 replicas), in place of --nats-addr off.
func (c *testCluster) withNATS() {
	routes := make([]string, len(c.nodes))
	for i := range c.nodes {
		routes[i] = testkit.FreeAddr(c.t)
	}
	for i, p := range c.nodes {
		p.nats = testkit.FreeAddr(c.t)
		for j, a := range p.args {
			if a == "--nats-addr" {
				p.args[j+1] = p.nats
			}
		}
		p.args = append(p.args, "--nats-cluster-addr", routes[i], "--nats-routes", strings.Join(routes, ","))
	}
}

// waitJetStream waits until every node's NATS server answers for the
// streams with a leader and all replicas current: a NATS cluster that loses a
// server before its JetStream metadata group first elected a leader can stay
// without one (seen with nats-server 2.15.2), so the kill must come after.
func (c *testCluster) waitJetStream(total time.Duration) {
	c.t.Helper()
	testkit.Poll{Timeout: total, Every: 250 * time.Millisecond}.EventuallyNil(c.t, "JetStream ready", func() error {
		for _, p := range c.nodes {
			nc, err := nats.Connect(p.natsURL(c.t), nats.Timeout(2*time.Second))
			if err != nil {
				return err
			}
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			for _, name := range []string{stream.IngressStream, stream.EventsStream, stream.DeadStream} {
				st, err := js.Stream(ctx, name)
				if err == nil {
					var info *jetstream.StreamInfo
					if info, err = st.Info(ctx); err == nil && (info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2) {
						err = fmt.Errorf("stream %s has no leader or not 3 replicas: %+v", name, info.Cluster)
					}
				}
				if err != nil {
					cancel()
					nc.Close()
					return fmt.Errorf("%s: stream %s: %w", p.id, name, err)
				}
			}
			cancel()
			nc.Close()
		}
		return nil
	})
}

type sagaShop struct {
	t      *testing.T
	c      *testCluster
	cl     *client.Client
	tenant string
	ws     string
}

func (s *sagaShop) addr(typ, id string) *pb.Address {
	return &pb.Address{Tenant: s.tenant, Workspace: s.ws, ActorType: typ, EntityId: id}
}

// submit sends a command through the gateway, retrying through the leader
// changes of a failover with the same idempotency key.
func (s *sagaShop) submit(typ, id, verb, key, corr string, payload any) *pb.Result {
	s.t.Helper()
	data, _ := json.Marshal(payload)
	req := &pb.SubmitRequest{Address: s.addr(typ, id), Type: actor.CommandType(typ, verb), Payload: data,
		IdempotencyKey: key, CommandId: "cmd-" + key, CorrelationId: corr}
	var res *pb.Result
	testkit.Poll{Timeout: 30 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(s.t, "submit accepted", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := s.cl.Submit(ctx, req)
		if err != nil {
			return err
		}
		res = r.Result
		return nil
	})
	if res.Status != pb.Status_STATUS_ACCEPTED {
		s.t.Fatalf("%s %s/%s: %v", verb, typ, id, res)
	}
	return res
}

func (s *sagaShop) state(typ, id string, into any) {
	s.t.Helper()
	testkit.Poll{Timeout: 20 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(s.t, "state readable", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := s.cl.Get(ctx, &pb.GetRequest{Address: s.addr(typ, id)})
		if err != nil {
			return err
		}
		if len(r.State) == 0 {
			return nil // never written: the zero state
		}
		return json.Unmarshal(r.State, into)
	})
}

func (s *sagaShop) history(cl *client.Client, typ, id string) []*pb.Event {
	s.t.Helper()
	var out []*pb.Event
	testkit.Poll{Timeout: 20 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(s.t, "history readable", func() error {
		out = out[:0]
		token := ""
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := cl.History(ctx, &pb.HistoryRequest{Address: s.addr(typ, id), PageSize: 1000, PageToken: token})
			cancel()
			if err != nil {
				return err
			}
			for _, rec := range r.Records {
				if ev := rec.GetEvent(); ev != nil {
					out = append(out, ev)
				}
			}
			if token = r.NextPageToken; token == "" {
				return nil
			}
		}
	})
	return out
}

// pickEntity returns the first id with the prefix whose shard (of 8) is not
// in avoid.
func pickEntity(typ, prefix string, avoid ...uint32) (string, uint32) {
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		sh := shard.Of(actor.Address{Tenant: "t", Workspace: "shop", ActorType: typ, EntityID: id}, 8)
		ok := true
		for _, a := range avoid {
			ok = ok && a != sh
		}
		if ok {
			return id, sh
		}
	}
}

// The saga runs across shards on a 3-node cluster while the leader of the
// inventory's shard is killed mid-flow: every order ends completed (rich
// account) or cancelled with its reservation released (poor account), and
// every step is applied exactly once, with the order's correlation id.
func TestSaga_ExactlyOnceAcrossShardsWhenALeaderIsKilled(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	c.withNATS()
	for _, p := range c.nodes {
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 90*time.Second)
	c.waitJetStream(60 * time.Second)
	s := &sagaShop{t: t, c: c, cl: c.client(c.nodes[0]), tenant: "t", ws: "shop"}
	s.cl.Close()
	cl, err := client.Dial(c.nodes[0].grpc, client.WithToken(clusterToken))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	s.cl = cl

	rich, richShard := pickEntity("payment", "rich")
	poor, poorShard := pickEntity("payment", "poor", richShard)
	wh, whShard := pickEntity("inventory", "wh", richShard, poorShard)
	const orders, qty, amount, stock = 24, 2, 100, 1000
	s.submit("inventory", wh, "stock", "stock-1", "", builtin.InventoryStock{SKU: "apple", Qty: stock})
	s.submit("payment", rich, "deposit", "dep-1", "", map[string]int64{"amount": 1_000_000})

	victim := c.leaderOf(c.nodes[0], whShard)
	if victim == c.nodes[0] { // keep the client's node up
		cl2, err := client.Dial(c.nodes[1].grpc, client.WithToken(clusterToken))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl2.Close() })
		s.cl = cl2
	}

	// Watchers on a node that stays up: the inventory's events (published by
	// the relay of the shard whose leader is killed) and every order event.
	watchNode := c.nodes[0]
	if victim == watchNode {
		watchNode = c.nodes[1]
	}
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	invW := s.watch(wctx, watchNode, "inventory", wh)
	ordW := s.watch(wctx, watchNode, "order", "")

	var wg sync.WaitGroup
	place := func(i int) {
		defer wg.Done()
		pay := rich
		if i%2 == 1 {
			pay = poor
		}
		id := fmt.Sprintf("o%d", i)
		s.submit("order", id, "place", "place-"+id, "corr-"+id,
			builtin.OrderPlace{SKU: "apple", Qty: qty, Amount: amount, Inventory: wh, Payment: pay})
	}
	for i := range orders / 2 {
		wg.Add(1)
		go place(i)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, w := range []*watcher{invW, ordW} {
			w.mu.Lock()
			t.Logf("watch: events of %d entities, ended with %v", len(w.byEnt), w.err)
			w.mu.Unlock()
		}
		s.dumpJetStream(t, c)
	})
	// Kill once the first flows are under way: an order has an event.
	testkit.Eventually(t, 30*time.Second, "a first order event watched", func() (bool, string) {
		ordW.mu.Lock()
		defer ordW.mu.Unlock()
		if ordW.err != nil {
			t.Fatalf("the order watch ended: %v", ordW.err)
		}
		return len(ordW.byEnt) > 0, "no order event yet"
	})
	victim.kill()
	t.Logf("killed %s, leader of the inventory's shard %d", victim.id, whShard)
	for i := orders / 2; i < orders; i++ {
		wg.Add(1)
		go place(i)
	}
	wg.Wait()

	final := map[string]bool{builtin.OrderStatusCompleted: true, builtin.OrderStatusCancelled: true}
	testkit.Poll{Timeout: 90 * time.Second, Every: 500 * time.Millisecond}.EventuallyNil(t, "every order final", func() error {
		for i := range orders {
			var o builtin.OrderState
			s.state("order", fmt.Sprintf("o%d", i), &o)
			if !final[o.Status] {
				return fmt.Errorf("order o%d is %q", i, o.Status)
			}
			want := builtin.OrderStatusCompleted
			if i%2 == 1 {
				want = builtin.OrderStatusCancelled
			}
			if o.Status != want {
				t.Fatalf("order o%d ended %q, want %q", i, o.Status, want)
			}
		}
		return nil
	})
	victim.start(t)
	c.waitConverged(c.nodes[0], 90*time.Second)

	var inv builtin.InventoryState
	s.state("inventory", wh, &inv)
	if got := inv.SKUs["apple"]; got.Available != stock-qty*orders/2 || got.Held != 0 || len(inv.Holds) != 0 {
		t.Fatalf("inventory %+v, want %d available and nothing held", inv, stock-qty*orders/2)
	}
	var pr, pp builtin.PaymentState
	s.state("payment", rich, &pr)
	s.state("payment", poor, &pp)
	if pr.Balance != 1_000_000-amount*orders/2 || pp.Balance != 0 {
		t.Fatalf("balances rich %d poor %d, want %d and 0", pr.Balance, pp.Balance, 1_000_000-amount*orders/2)
	}

	// Exactly once, read on every node: one event per step and order.
	for _, p := range c.nodes {
		pcl, err := client.Dial(p.grpc, client.WithToken(clusterToken))
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for _, ev := range append(s.history(pcl, "inventory", wh), s.history(pcl, "payment", rich)...) {
			counts[ev.Type]++
		}
		for _, ev := range s.history(pcl, "payment", poor) {
			counts[ev.Type]++
		}
		for i := range orders {
			id := fmt.Sprintf("o%d", i)
			var types []string
			for _, ev := range s.history(pcl, "order", id) {
				types = append(types, strings.TrimPrefix(ev.Type, "evt.order."))
				if ev.CorrelationId != "corr-"+id {
					t.Fatalf("%s: event %s has correlation %q", id, ev.Type, ev.CorrelationId)
				}
			}
			want := "placed reserved completed"
			if i%2 == 1 {
				want = "placed reserved payment_failed cancelled"
			}
			if strings.Join(types, " ") != want {
				t.Fatalf("%s on %s: events %v, want %s", id, p.id, types, want)
			}
		}
		want := map[string]int{
			"evt.inventory.stocked": 1, "evt.inventory.reserved": orders, "evt.inventory.committed": orders / 2,
			"evt.inventory.released": orders / 2, "evt.payment.deposited": 1,
			"evt.payment.charged": orders / 2, "evt.payment.declined": orders / 2,
		}
		if fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Fatalf("events on %s: %v, want %v", p.id, counts, want)
		}
		pcl.Close()
	}

	// Watch delivered every event of its filter once, in per-entity order,
	// across the leader change of the inventory's shard.
	invEvents := s.history(s.cl, "inventory", wh)
	invW.expect(t, map[string]int{wh: len(invEvents)})
	wantOrders := map[string]int{}
	for i := range orders {
		wantOrders[fmt.Sprintf("o%d", i)] = 3 + i%2
	}
	ordW.expect(t, wantOrders)
}

// watcher collects the events of one Watch, by entity.
type watcher struct {
	mu     sync.Mutex
	byEnt  map[string][]*pb.Event
	seqs   map[uint64]bool
	dupSeq int
	err    error
}

func (s *sagaShop) watch(ctx context.Context, p *nodeProc, typ, entity string) *watcher {
	s.t.Helper()
	cl, err := client.Dial(p.grpc, client.WithToken(clusterToken))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cl.Close() })
	w := &watcher{byEnt: map[string][]*pb.Event{}, seqs: map[uint64]bool{}}
	go func() {
		err := cl.Watch(ctx, &pb.WatchRequest{Tenant: s.tenant, Workspace: s.ws, ActorType: typ, EntityId: entity, FromBeginning: true},
			func(we *pb.WatchEvent) error {
				w.mu.Lock()
				defer w.mu.Unlock()
				if w.seqs[we.Sequence] {
					w.dupSeq++
				}
				w.seqs[we.Sequence] = true
				id := we.Event.Address.EntityId
				w.byEnt[id] = append(w.byEnt[id], we.Event)
				return nil
			})
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}()
	return w
}

// expect waits until the watcher has want[entity] events of each entity and
// checks they are versions 1..n in order, each once.
func (w *watcher) expect(t *testing.T, want map[string]int) {
	t.Helper()
	testkit.Poll{Timeout: 30 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "watched versions", func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.err != nil && w.err != context.Canceled {
			t.Fatalf("watch ended: %v", w.err)
		}
		for ent, n := range want {
			if got := len(w.byEnt[ent]); got < n {
				return fmt.Errorf("watch has %d events of %s, want %d", got, ent, n)
			}
		}
		return nil
	})
	// A repeated delivery would come after the originals just seen: watch
	// for one (or an extra event) for half a second, the window this bounds.
	testkit.Consistently(t, 500*time.Millisecond, "no repeated or extra events", func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.dupSeq != 0 {
			return false, fmt.Sprintf("%d repeated sequences", w.dupSeq)
		}
		for ent, evs := range w.byEnt {
			if len(evs) > want[ent] {
				return false, fmt.Sprintf("%d events of %s, want %d", len(evs), ent, want[ent])
			}
		}
		return true, ""
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.byEnt) != len(want) || w.dupSeq != 0 {
		t.Fatalf("watch saw %d entities (want %d), %d repeated sequences", len(w.byEnt), len(want), w.dupSeq)
	}
	for ent, evs := range w.byEnt {
		if len(evs) != want[ent] {
			t.Fatalf("watch has %d events of %s, want %d", len(evs), ent, want[ent])
		}
		for i, ev := range evs {
			if ev.Version != uint64(i+1) {
				t.Fatalf("watch of %s: event %d has version %d: out of order or missing", ent, i, ev.Version)
			}
		}
	}
}

// dumpJetStream logs the ingress consumers' state as a live node sees it.
func (s *sagaShop) dumpJetStream(t *testing.T, c *testCluster) {
	for _, p := range c.nodes {
		if p.cmd == nil || p.cmd.ProcessState != nil {
			continue
		}
		nc, err := nats.Connect(p.natsURL(t), nats.Timeout(3*time.Second))
		if err != nil {
			t.Logf("dump via %s: %v", p.id, err)
			continue
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, name := range []string{stream.IngressStream, stream.EventsStream, stream.DeadStream} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				t.Logf("stream %s: %v", name, err)
				continue
			}
			info, _ := st.Info(ctx)
			t.Logf("stream %s: msgs %d leader %s replicas %v", name, info.State.Msgs, info.Cluster.Leader, info.Cluster.Replicas)
		}
		st, err := js.Stream(ctx, stream.IngressStream)
		if err != nil {
			return
		}
		// The shard leaders' ordered consumers, one per subject.
		l := st.ListConsumers(ctx)
		for ci := range l.Info() {
			leader := ""
			if ci.Cluster != nil {
				leader = ci.Cluster.Leader
			}
			t.Logf("consumer %s of %s: pending %d waiting %d on %s delivered %d",
				ci.Name, ci.Config.FilterSubject, ci.NumPending, ci.NumWaiting, leader, ci.Delivered.Stream)
		}
		return
	}
}
