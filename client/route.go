package client

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Leader routing.
//
// Any gateway takes any request and forwards it to the node that leads the
// entity's shard; that forward costs both nodes CPU and the caller a network
// hop. A routing client sends Submit (and linearizable Get and History)
// straight to the leader's gateway instead: it learns the shard count, each
// shard's leader and each node's gateway address from Status, computes the
// shard of an address itself (actor.ShardOf, the function the nodes use) and
// keeps connections to every node.
//
// Its table is a hint, never a correctness matter: a request sent to the
// wrong node is forwarded as before, and a retry keeps the idempotency key
// wherever it goes. The table follows leadership changes through the
// gateway's trailers (a node that does not lead the shard names the node
// that does, gateway.LeaderTrailer), through a Status refresh at most every
// minimum gap after such a hint or a failed routed call, and through a
// background refresh at a longer interval. A leader whose connection is not
// up is skipped (the request goes to any node, which forwards it), so a
// down node costs no more than it did without routing.

// These mirror the gateway's routing trailers (gateway.LeaderTrailer,
// LeaderAddrTrailer and ScopeTrailer); a test checks that they agree.
const (
	trailerLeader     = "rhizon-leader"
	trailerLeaderAddr = "rhizon-leader-addr"
	trailerScope      = "rhizon-scope"
)

// Defaults of WithRouteRefresh.
const (
	DefaultRouteRefresh = 5 * time.Second
	DefaultRouteMinGap  = 200 * time.Millisecond
)

// routeStatusTimeout bounds one Status call of a refresh (the node asks
// every other node, one second each).
const routeStatusTimeout = 3 * time.Second

// maxRouteShards bounds the shard count a Status answer may claim
// (cluster.MaxShards is 4096).
const maxRouteShards = 1 << 16

// endpoint is the connections to one gateway address.
type endpoint struct {
	addr  string
	conns []*grpc.ClientConn
	gws   []*gwConn
	next  atomic.Uint32
}

// any returns the endpoint's next connection whatever its state: gRPC
// connects, or fails the call, as it would for a single-address client.
func (e *endpoint) any() pb.GatewayClient {
	if len(e.gws) == 1 {
		return e.gws[0]
	}
	return e.gws[e.next.Add(1)%uint32(len(e.gws))]
}

// ready returns a connection that is up, or nil. Idle ones are asked to
// connect, so that a later call finds them up: a routed call never waits for
// a connection (or for a dead node's connect timeout).
func (e *endpoint) ready() pb.GatewayClient {
	n := uint32(len(e.conns))
	start := uint32(0)
	if n > 1 {
		start = e.next.Add(1)
	}
	for i := range n {
		k := (start + i) % n
		switch e.conns[k].GetState() {
		case connectivity.Ready:
			return e.gws[k]
		case connectivity.Idle:
			e.conns[k].Connect()
		}
	}
	return nil
}

// failing reports whether the endpoint's connections fail to connect.
func (e *endpoint) failing() bool {
	return e.conns[0].GetState() == connectivity.TransientFailure
}

func (e *endpoint) connect() {
	for _, c := range e.conns {
		c.Connect()
	}
}

func (e *endpoint) close() error {
	for _, gw := range e.gws {
		gw.st.Close()
		gw.get.Close()
	}
	var first error
	for _, c := range e.conns {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// routeTable is one immutable version of what the client knows.
type routeTable struct {
	count   uint32
	leaders []*endpoint // by shard; nil where unknown
	nodes   []string    // the leaders' node ids, by shard
}

// scopeKey is the tenant and workspace of a request as sent (either may be
// empty); scope is what the gateway made of them with the token's defaults.
type scopeKey struct{ tenant, workspace string }

type router struct {
	c          *Client
	every, gap time.Duration

	ctx    context.Context // ends with the client
	cancel context.CancelFunc
	start  sync.Once
	kick   chan struct{}
	done   chan struct{}

	table  atomic.Pointer[routeTable]
	scopes atomic.Pointer[map[scopeKey]scopeKey]
	// mu serializes the writers of table and scopes (readers load them).
	mu sync.Mutex

	refreshes atomic.Uint64 // Status answers installed, for tests
}

func newRouter(c *Client) *router {
	ctx, cancel := context.WithCancel(context.Background())
	return &router{
		c: c, every: c.opts.refreshEvery, gap: c.opts.refreshGap,
		ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

// run starts the refresh loop, once; the first routed call does it, so that
// DialCluster, like grpc.NewClient, does not connect by itself.
func (r *router) run() {
	r.start.Do(func() {
		if r.ctx.Err() != nil {
			close(r.done)
			return
		}
		go r.loop()
	})
}

// stop ends the refresh loop and waits for it.
func (r *router) stop() {
	r.cancel()
	r.start.Do(func() { close(r.done) })
	<-r.done
}

func (r *router) loop() {
	defer close(r.done)
	gap := r.gap
	for {
		// At most one refresh per gap, however many hints arrive; the gap
		// doubles, up to the interval, while refreshes fail (no node
		// answers, or the token may not call Status), so that hints of a
		// table the client cannot get do not turn into polling.
		if r.refresh() {
			gap = r.gap
		} else {
			gap = min(2*gap, r.every)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(gap):
		}
		t := time.NewTimer(r.every)
		select {
		case <-r.ctx.Done():
			t.Stop()
			return
		case <-r.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// refreshSoon asks for a refresh (coalesced, and paced by the loop).
func (r *router) refreshSoon() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// refresh asks the nodes for Status, seeds first, until one answers, and
// installs the answer; it reports whether one answered.
func (r *router) refresh() bool {
	c := r.c
	tried := map[*endpoint]bool{}
	try := func(ep *endpoint) bool {
		if tried[ep] || ep.failing() {
			return false
		}
		tried[ep] = true
		ctx, cancel := context.WithTimeout(r.ctx, routeStatusTimeout)
		defer cancel()
		st, err := ep.any().Status(ctx, &pb.StatusRequest{})
		return err == nil && r.install(st)
	}
	start := int(c.next.Add(1))
	for i := range c.seeds {
		if try(c.seeds[(start+i)%len(c.seeds)]) {
			return true
		}
	}
	if t := r.table.Load(); t != nil {
		for _, ep := range t.leaders {
			if ep != nil && try(ep) {
				return true
			}
		}
	}
	return false
}

// install replaces the table with what st says: for each shard the replica
// that reports itself leader in the highest term, else the leader the
// replica with the highest term knows; and the gateway addresses of the
// nodes gossip sees alive. It reports whether st was usable.
func (r *router) install(st *pb.StatusResponse) bool {
	count := st.GetShardCount()
	if count == 0 || count > maxRouteShards {
		return false
	}
	addrs := map[string]string{}
	for _, n := range st.GetNodes() {
		if n.GetState() == "alive" && n.GetGrpcAddr() != "" {
			addrs[n.GetNodeId()] = n.GetGrpcAddr()
		}
	}
	type claim struct {
		node   string
		term   uint64
		leader bool // the replica itself leads
	}
	best := make([]claim, count)
	for _, s := range st.GetShards() {
		if s.GetShard() >= count {
			continue
		}
		c := claim{node: s.GetLeader(), term: s.GetTerm()}
		if s.GetRole() == "Leader" {
			c = claim{node: s.GetNodeId(), term: s.GetTerm(), leader: true}
		}
		b := &best[s.GetShard()]
		if c.node != "" && (b.node == "" || (c.leader && !b.leader) || (c.leader == b.leader && c.term > b.term)) {
			*b = c
		}
	}
	t := &routeTable{count: count, leaders: make([]*endpoint, count), nodes: make([]string, count)}
	for i, b := range best {
		if addr := addrs[b.node]; addr != "" {
			t.leaders[i], t.nodes[i] = r.c.endpoint(addr), b.node
		}
	}
	r.mu.Lock()
	r.table.Store(t)
	r.mu.Unlock()
	r.refreshes.Add(1)
	return true
}

// setLeader records that node, at addr, leads shard of a table of count
// shards; it reports whether that changed the table.
func (r *router) setLeader(count, shard uint32, node, addr string) bool {
	ep := r.c.endpoint(addr)
	if ep == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.table.Load()
	if t == nil || t.count != count || shard >= count || t.leaders[shard] == ep {
		return false
	}
	nt := &routeTable{count: count, leaders: slices.Clone(t.leaders), nodes: slices.Clone(t.nodes)}
	nt.leaders[shard], nt.nodes[shard] = ep, node
	r.table.Store(nt)
	return true
}

// learnScope records the gateway's "tenant/workspace" for requests sent
// with addr's tenant and workspace.
func (r *router) learnScope(addr *pb.Address, v string) {
	tenant, ws, ok := strings.Cut(v, "/")
	if !ok || tenant == "" || ws == "" {
		return
	}
	k, s := scopeKey{addr.GetTenant(), addr.GetWorkspace()}, scopeKey{tenant, ws}
	if m := r.scopes.Load(); m != nil && (*m)[k] == s {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[scopeKey]scopeKey{}
	if old := r.scopes.Load(); old != nil {
		m = maps.Clone(*old)
	}
	m[k] = s
	r.scopes.Store(&m)
}

// resolve returns the full address the gateway will serve for addr, if the
// client can tell: the tenant and workspace are given, or a previous answer
// said what the token's defaults make of them.
func (r *router) resolve(addr *pb.Address) (actor.Address, bool) {
	a := actor.Address{Tenant: addr.GetTenant(), Workspace: addr.GetWorkspace(), ActorType: addr.GetActorType(), EntityID: addr.GetEntityId()}
	if a.Tenant == "" || a.Workspace == "" {
		m := r.scopes.Load()
		if m == nil {
			return a, false
		}
		s, ok := (*m)[scopeKey{a.Tenant, a.Workspace}]
		if !ok {
			return a, false
		}
		a.Tenant, a.Workspace = s.tenant, s.workspace
	}
	return a, true
}

// shardOf is addr's shard in table t, if the client can tell.
func (r *router) shardOf(t *routeTable, addr *pb.Address) (uint32, bool) {
	if t == nil {
		return 0, false
	}
	a, ok := r.resolve(addr)
	if !ok {
		return 0, false
	}
	return actor.ShardOf(a, t.count), true
}

// routeCall is one attempt of a routable call.
type routeCall struct {
	r      *router
	addr   *pb.Address
	count  uint32 // shard count of the table the shard was computed with
	shard  uint32
	known  bool      // shard is known
	routed *endpoint // the leader the call went to; nil: any node
	tr     metadata.MD
}

// target picks the connection for a call on addr: the shard leader's when
// route is set and the client knows it and is connected to it, else any.
// The routeCall (nil without routing) must see the call's options and its
// outcome.
func (c *Client) target(addr *pb.Address, route bool) (pb.GatewayClient, *routeCall) {
	if c.r == nil || !route {
		return c.anyGateway(), nil
	}
	r := c.r
	r.run()
	rc := &routeCall{r: r, addr: addr}
	t := r.table.Load()
	if shard, ok := r.shardOf(t, addr); ok {
		rc.count, rc.shard, rc.known = t.count, shard, true
		if ep := t.leaders[shard]; ep != nil {
			if gw := ep.ready(); gw != nil {
				rc.routed = ep
				return gw, rc
			}
		}
	}
	return c.anyGateway(), rc
}

// callOptions adds the trailer the routing hints arrive in.
func (rc *routeCall) callOptions(opts []grpc.CallOption) []grpc.CallOption {
	if rc == nil {
		return opts
	}
	return append(opts[:len(opts):len(opts)], grpc.Trailer(&rc.tr))
}

// trailer is where a streamed submit puts the trailers (nil without
// routing: nobody reads them).
func (rc *routeCall) trailer() *metadata.MD {
	if rc == nil {
		return nil
	}
	return &rc.tr
}

// finish learns from the call's trailers and outcome.
func (rc *routeCall) finish(err error) {
	if rc == nil {
		return
	}
	r := rc.r
	if v := rc.tr.Get(trailerScope); len(v) > 0 {
		r.learnScope(rc.addr, v[0])
	}
	if addrs := rc.tr.Get(trailerLeaderAddr); len(addrs) > 0 && addrs[0] != "" {
		node := ""
		if v := rc.tr.Get(trailerLeader); len(v) > 0 {
			node = v[0]
		}
		if !rc.known {
			// The scope may have arrived with this very answer.
			t := r.table.Load()
			if shard, ok := r.shardOf(t, rc.addr); ok {
				rc.count, rc.shard, rc.known = t.count, shard, true
			}
		}
		// A leader other than the table's means leadership moved, maybe of
		// other shards too (a node died, the cluster rebalanced): refresh.
		if !rc.known || r.setLeader(rc.count, rc.shard, node, addrs[0]) {
			r.refreshSoon()
		}
	}
	if err != nil && rc.routed != nil && status.Code(err) == codes.Unavailable {
		r.refreshSoon()
	}
}

// anyGateway returns a connection to any of the given addresses, in turn,
// passing over those whose connections are failing while another is not.
func (c *Client) anyGateway() pb.GatewayClient {
	if len(c.seeds) == 1 {
		return c.seeds[0].any()
	}
	n := uint32(len(c.seeds))
	start := c.next.Add(1)
	for i := range n {
		if ep := c.seeds[(start+i)%n]; !ep.failing() {
			return ep.any()
		}
	}
	return c.seeds[start%n].any()
}
