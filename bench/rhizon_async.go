package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/client"
)

// The asynchronous workloads on Rhizon: ingress (commands published to
// JetStream by the load generator, applied by the shard leaders) and saga
// (orders through the built-in order, inventory and payment actors, whose
// Sends travel through the outbox relay and JetStream). Neither answers the
// caller synchronously, so the load generator follows what the cluster
// publishes: the counter events on the events stream for ingress, a Watch of
// the order events for saga.

var (
	_ IngressTarget = (*Rhizon)(nil)
	_ SagaTarget    = (*Rhizon)(nil)
)

// Saga amounts: every order is for one unit at one minor unit; the setup
// stocks and funds each inventory and payment far beyond any run.
const (
	sagaSKU        = "bench"
	sagaStock      = int64(1) << 40
	sagaBalance    = int64(1) << 50
	probeTimeout   = 5 * time.Second
	asyncSetupWait = 90 * time.Second
)

// waiters hands a result to the operation waiting for it, by id (a command
// id for ingress, an order's entity id for saga).
type waiters struct {
	mu sync.Mutex
	m  map[string]chan Outcome
}

func (w *waiters) add(id string) chan Outcome {
	ch := make(chan Outcome, 1)
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string]chan Outcome{}
	}
	w.m[id] = ch
	w.mu.Unlock()
	return ch
}

func (w *waiters) remove(id string) {
	w.mu.Lock()
	delete(w.m, id)
	w.mu.Unlock()
}

// deliver gives o to the operation waiting for id, if any, once.
func (w *waiters) deliver(id string, o Outcome) {
	w.mu.Lock()
	ch, ok := w.m[id]
	delete(w.m, id)
	w.mu.Unlock()
	if ok {
		ch <- o // buffered: never blocks
	}
}

// rhizonIngress is the ingress workload's state: NATS connections to the
// nodes' servers, the scope and shard count the subjects are computed from,
// and the subscription to the counter events.
type rhizonIngress struct {
	conns             []*nats.Conn
	js                []jetstream.JetStream
	next              atomic.Uint64
	tenant, workspace string
	shards            uint32
	sub               *nats.Subscription
	waiters           waiters
}

// rhizonSaga is the saga workload's state: a Watch of the order events on
// a connection of its own.
type rhizonSaga struct {
	cl      *client.Client
	cancel  context.CancelFunc
	done    chan struct{} // closed when the watch ended
	err     error         // why it ended; read after done is closed
	waiters waiters
	orders  atomic.Uint64
	prefix  string
}

// setupAsync prepares the asynchronous workloads and stops the machinery of
// the others: a subscription left running would make the load generator
// decode every counter event of a later w1-command run.
func (t *Rhizon) setupAsync(ctx context.Context, w Workload) (handled bool, err error) {
	if w.Op != OpIngress {
		t.stopIngressEvents()
	}
	if w.Op != OpSaga {
		t.stopSagaWatch()
	}
	switch w.Op {
	case OpIngress:
		return true, t.setupIngress(ctx, w)
	case OpSaga:
		return true, t.setupSaga(ctx, w)
	}
	return false, nil
}

// closeAsync releases what setupAsync opened.
func (t *Rhizon) closeAsync() {
	t.stopIngressEvents()
	t.stopSagaWatch()
	if t.ing != nil {
		for _, nc := range t.ing.conns {
			nc.Close()
		}
		t.ing = nil
	}
}

func (t *Rhizon) setupIngress(ctx context.Context, w Workload) error {
	if len(t.cfg.NATS) == 0 {
		return errors.New("bench: the ingress workload publishes to the nodes' NATS servers and reads their events stream: give their client URLs with the node credentials (rhizon bench --nats \"$(rhizon nats-url --cluster-secret S host:port,...)\"; rhizon dev's banner prints its URL)")
	}
	if t.ing == nil {
		ing := &rhizonIngress{}
		for _, u := range t.cfg.NATS {
			// The node inbox prefix: the replies this connection gets
			// must not reach clients without credentials (see
			// stream.NodeInboxPrefix).
			nopts := []nats.Option{nats.Name("rhizon-bench"), nats.Timeout(DefaultPeerDialTimeout), nats.MaxReconnects(-1),
				nats.CustomInboxPrefix(stream.NodeInboxPrefix)}
			if t.cfg.NATSTLS != nil {
				nopts = append(nopts, nats.Secure(t.cfg.NATSTLS))
			}
			nc, err := nats.Connect(u, nopts...)
			if err != nil {
				for _, c := range ing.conns {
					c.Close()
				}
				if errors.Is(err, nats.ErrAuthorization) {
					return fmt.Errorf("bench: nats connect %s: %w (the ingress workload needs the node credentials in the --nats URLs: rhizon nats-url; rhizon dev's banner prints its URL)", u, err)
				}
				return fmt.Errorf("bench: nats connect %s: %w", u, err)
			}
			ing.conns = append(ing.conns, nc)
			// Commands go as a producer's do: on a connection
			// authenticated by the bearer token, in its own NATS
			// account (the embedded servers'). A NATS without producer
			// accounts refuses it; then the node connection publishes,
			// the token in the Authorization header.
			pub := nc
			if pu, ok := producerURL(u); ok {
				popts := []nats.Option{nats.Name("rhizon-bench-producer"), nats.Timeout(DefaultPeerDialTimeout), nats.MaxReconnects(-1),
					nats.Token(t.cfg.Token)}
				if t.cfg.NATSTLS != nil {
					popts = append(popts, nats.Secure(t.cfg.NATSTLS))
				}
				if pc, err := nats.Connect(pu, popts...); err == nil {
					ing.conns, pub = append(ing.conns, pc), pc
				}
			}
			js, err := jetstream.New(pub)
			if err != nil {
				for _, c := range ing.conns {
					c.Close()
				}
				return fmt.Errorf("bench: jetstream on %s: %w", u, err)
			}
			ing.js = append(ing.js, js)
		}
		t.ing = ing
	}
	ing := t.ing
	// The subjects need the command's full address and the shard count:
	// the gateway resolves the token's tenant and workspace on a read.
	probe := w.EntityPrefix + "probe"
	got, err := t.client().Get(ctx, &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: probe}})
	if err != nil {
		return fmt.Errorf("bench: resolve the token's tenant and workspace: %w", err)
	}
	st, err := t.client().Status(ctx)
	if err != nil {
		return fmt.Errorf("bench: status (for the shard count): %w", err)
	}
	if st.GetShardCount() == 0 {
		return errors.New("bench: status reports no shards")
	}
	ing.tenant, ing.workspace, ing.shards = got.GetAddress().GetTenant(), got.GetAddress().GetWorkspace(), st.GetShardCount()
	if ing.sub == nil {
		subj := stream.EventFilter(ing.tenant, ing.workspace, "counter", "")
		sub, err := ing.conns[0].Subscribe(subj, ing.onEvent)
		if err != nil {
			return fmt.Errorf("bench: subscribe %s: %w", subj, err)
		}
		// The handler only decodes and hands over; never drop an event
		// because a burst outran it.
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			_ = sub.Unsubscribe()
			return err
		}
		if err := ing.conns[0].FlushTimeout(DefaultPeerDialTimeout); err != nil {
			_ = sub.Unsubscribe()
			return err
		}
		// A refused subscription is only reported asynchronously; the
		// flush's round trip has brought the refusal, if any.
		if err := ing.conns[0].LastError(); errors.Is(err, nats.ErrPermissionViolation) {
			_ = sub.Unsubscribe()
			return fmt.Errorf("bench: subscribe %s: %w (the ingress workload needs the node credentials in the --nats URLs: rhizon nats-url)", subj, err)
		}
		ing.sub = sub
	}
	// One command end to end before the run: the streams and the shard
	// leaders' consumers exist, and the subscription's interest has
	// reached every server the relays publish on.
	return probeUntil(ctx, "ingress", func(ctx context.Context) (Outcome, error) { return t.Ingress(ctx, probe) })
}

// producerURL is a NATS URL without its credentials, for a connection that
// authenticates with the bearer token instead.
func producerURL(u string) (string, bool) {
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" {
		return "", false
	}
	pu.User = nil
	return pu.String(), true
}

// onEvent hands a counter event to the operation waiting for its command.
func (ing *rhizonIngress) onEvent(m *nats.Msg) {
	var ev pb.Event
	if err := proto.Unmarshal(m.Data, &ev); err != nil {
		return
	}
	ing.waiters.deliver(ev.GetCommandId(), OK)
}

func (t *Rhizon) stopIngressEvents() {
	if t.ing != nil && t.ing.sub != nil {
		_ = t.ing.sub.Unsubscribe()
		t.ing.sub = nil
	}
}

// Ingress publishes cmd.counter.add {"amount":1} for counter/<entity> to
// its shard's ingress subject, as a producer outside the cluster does
// (protobuf rhizon.v1.Command, Authorization: Bearer <token>, asynchronous
// JetStream publish), and returns once the counter event of that command
// arrived on the events stream: the shard leader consumed, committed and
// applied it, and the outbox relay published its event.
func (t *Rhizon) Ingress(ctx context.Context, entity string) (Outcome, error) {
	ing := t.ing
	if ing == nil || ing.sub == nil {
		return 0, &OpError{Kind: KindOther, Err: errors.New("ingress not set up")}
	}
	key := t.key()
	ch := ing.waiters.add(key)
	defer ing.waiters.remove(key)
	addr := &pb.Address{Tenant: ing.tenant, Workspace: ing.workspace, ActorType: "counter", EntityId: entity}
	data, err := proto.Marshal(&pb.Command{
		Id: key, Type: "cmd.counter.add", Address: addr, Payload: []byte(`{"amount":1}`), IdempotencyKey: key,
	})
	if err != nil {
		return 0, &OpError{Kind: KindOther, Err: err}
	}
	m := nats.NewMsg(stream.IngressSubject(actor.ShardOf(addr.ToActor(), ing.shards)))
	m.Data = data
	m.Header.Set(stream.HeaderAuthorization, "Bearer "+t.cfg.Token)
	f, err := ing.js[ing.next.Add(1)%uint64(len(ing.js))].PublishMsgAsync(m)
	if err != nil {
		return 0, classifyNATS(err)
	}
	ackErr := f.Err()
	for {
		select {
		case o := <-ch:
			return o, nil
		case err := <-ackErr:
			return 0, classifyNATS(err)
		case <-ctx.Done():
			return 0, &OpError{Kind: KindTimeout, Err: fmt.Errorf("command %s not applied: %w", key, ctx.Err())}
		}
	}
}

func (t *Rhizon) setupSaga(ctx context.Context, w Workload) error {
	// Stock and funds, each with a fixed idempotency key: setting up again
	// against the same cluster answers from the stored results.
	stock, _ := json.Marshal(map[string]any{"sku": sagaSKU, "qty": sagaStock})
	funds, _ := json.Marshal(map[string]any{"amount": sagaBalance})
	err := forEachIndex(ctx, w.Entities, t.cfg.SetupConcurrency, func(ctx context.Context, i int) error {
		if err := t.setupSubmit(ctx, builtin.InventoryType, w.SagaInventory(i), "stock", stock); err != nil {
			return err
		}
		return t.setupSubmit(ctx, builtin.PaymentType, w.SagaPayment(i), "deposit", funds)
	})
	if err != nil {
		return err
	}
	if t.saga != nil {
		select {
		case <-t.saga.done: // ended (a refusal): open it again
			t.stopSagaWatch()
		default:
		}
	}
	if t.saga == nil {
		cl, err := client.Dial(t.cfg.Addrs[0], append([]client.Option{client.WithToken(t.cfg.Token),
			client.WithTenant(t.cfg.Tenant), client.WithWorkspace(t.cfg.Workspace)}, t.cfg.ClientOptions...)...)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithCancel(context.Background())
		s := &rhizonSaga{cl: cl, cancel: cancel, done: make(chan struct{}),
			prefix: w.EntityPrefix + "order-" + t.keyPrefix[len("bench-"):]}
		go func() {
			defer close(s.done)
			s.err = cl.Watch(wctx, &pb.WatchRequest{ActorType: builtin.OrderType}, s.onEvent)
		}()
		t.saga = s
	}
	// One order end to end: the watch is open (an order placed before it
	// was would be missed) and the relays and consumers run.
	return probeUntil(ctx, "saga", func(ctx context.Context) (Outcome, error) {
		return t.Saga(ctx, w.SagaInventory(0), w.SagaPayment(0))
	})
}

// setupSubmit submits one setup command with a fixed idempotency key and
// requires it accepted (first time) or its stored acceptance (again).
func (t *Rhizon) setupSubmit(ctx context.Context, typ, entity, verb string, payload []byte) error {
	resp, err := t.client().Submit(ctx, &pb.SubmitRequest{
		Address: &pb.Address{ActorType: typ, EntityId: entity}, Type: actor.CommandType(typ, verb),
		Payload: payload, IdempotencyKey: "bench-setup-" + verb, CommandId: t.key(),
	})
	if err != nil {
		return fmt.Errorf("bench: %s %s/%s: %w", verb, typ, entity, t.classify(err))
	}
	if r := resp.GetResult(); r.GetStatus() != pb.Status_STATUS_ACCEPTED {
		return fmt.Errorf("bench: %s %s/%s: rejected: %s %s", verb, typ, entity, r.GetCode(), r.GetMessage())
	}
	return nil
}

// onEvent ends the wait for an order at its final event.
func (s *rhizonSaga) onEvent(we *pb.WatchEvent) error {
	ev := we.GetEvent()
	switch ev.GetType() {
	case "evt.order.completed":
		s.waiters.deliver(ev.GetAddress().GetEntityId(), OK)
	case "evt.order.failed", "evt.order.cancelled":
		s.waiters.deliver(ev.GetAddress().GetEntityId(), Rejected)
	}
	return nil
}

func (t *Rhizon) stopSagaWatch() {
	if t.saga == nil {
		return
	}
	t.saga.cancel()
	<-t.saga.done
	_ = t.saga.cl.Close()
	t.saga = nil
}

// Saga places a new order for one unit of the bench sku at inventory,
// paid by payment (cmd.order.place through the gateway), and returns once
// the order's final event arrives on the Watch: completed is OK, failed or
// cancelled Rejected. In between the order, the inventory and the payment
// exchange four Sends (reserve, reserved, charge, charged), each committed
// on one shard, published by its leader's outbox relay to the target's
// ingress subject and applied by the target shard's leader.
func (t *Rhizon) Saga(ctx context.Context, inventory, payment string) (Outcome, error) {
	s := t.saga
	if s == nil {
		return 0, &OpError{Kind: KindOther, Err: errors.New("saga not set up")}
	}
	order := s.prefix + strconv.FormatUint(s.orders.Add(1), 36)
	ch := s.waiters.add(order)
	defer s.waiters.remove(order)
	payload, _ := json.Marshal(builtin.OrderPlace{SKU: sagaSKU, Qty: 1, Amount: 1, Inventory: inventory, Payment: payment})
	key := t.key()
	resp, err := t.client().Submit(ctx, &pb.SubmitRequest{
		Address: &pb.Address{ActorType: builtin.OrderType, EntityId: order}, Type: "cmd.order.place",
		Payload: payload, IdempotencyKey: key, CommandId: key,
	})
	if err != nil {
		return 0, t.classify(err)
	}
	if resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
		return Rejected, nil
	}
	select {
	case o := <-ch:
		return o, nil
	case <-s.done:
		return 0, &OpError{Kind: KindOther, Err: fmt.Errorf("watch of the order events ended: %v", s.err)}
	case <-ctx.Done():
		return 0, &OpError{Kind: KindTimeout, Err: fmt.Errorf("order %s not completed: %w", order, ctx.Err())}
	}
}

// probeUntil runs op until it succeeds, for at most asyncSetupWait, each
// try bounded by probeTimeout: the asynchronous paths of a cluster that has
// just started take a few seconds to exist (streams, consumers, interest).
func probeUntil(ctx context.Context, what string, op func(context.Context) (Outcome, error)) error {
	deadline := time.Now().Add(asyncSetupWait)
	var last string
	for {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		o, err := op(pctx)
		cancel()
		switch {
		case err == nil && o == OK:
			return nil
		case err != nil:
			// Timeouts and unavailability pass; anything else (a refused
			// token, a node without NATS) will not.
			if KindOf(err) == KindOther {
				return fmt.Errorf("bench: %s setup: %w", what, err)
			}
			last = err.Error()
		default:
			last = "outcome " + o.String()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s setup: no operation completed end to end within %v; last: %s", what, asyncSetupWait, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// forEachIndex calls f for 0 <= i < n with at most conc calls in flight and
// returns the first error (which stops the rest).
func forEachIndex(ctx context.Context, n, conc int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idx := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range max(min(conc, n), 1) {
		wg.Go(func() {
			for i := range idx {
				if err := f(ctx, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case idx <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(idx)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
