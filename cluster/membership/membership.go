package membership

// Membership: who is in the cluster, where they listen and what they run.
//
// memberlist (SWIM gossip) does the failure detection and dissemination. This
// file keeps a local table on top of it because memberlist's public API does
// not expose what the rest of the cluster needs to tell apart:
//
//   - memberlist.Node.State is never maintained for Members() or the
//     EventDelegate callbacks (in v0.7.0 the internal nodeState has its own
//     State field that shadows the embedded Node.State; upstream issue #293).
//     NotifyLeave therefore cannot tell a graceful leave from a failure, and
//     Members() never reports suspicion. We derive both ourselves: a leaving
//     node tells its peers over TCP before it gossips its leave (leave
//     intent), and a small local prober marks a member suspect when it stops
//     answering direct pings.
//   - memberlist forgets dead nodes after GossipToTheDeadTime, while the
//     control group wants to keep seeing a dead node until it has moved the
//     node's replicas away; Members() keeps them until Forget.
//
// Lock rule: memberlist calls the delegates below while holding its own node
// lock, so Membership never calls into memberlist while holding m.mu.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rhizon/rhizon/internal/logutil"
)

// NodeMeta is what a node tells the others about itself. It is gossiped with
// every alive message, so it must encode to at most memberlist.MetaMaxSize
// (512) bytes; New and UpdateMeta reject anything larger.
type NodeMeta struct {
	ID       string            // node id; also the memberlist node name, so it is not repeated in the encoding
	RaftAddr string            // multiplexed raft listener
	GRPCAddr string            // gateway + internal gRPC
	HTTPAddr string            // HTTP/JSON gateway
	NATSAddr string            // embedded NATS cluster route, may be empty
	Zone     string            // failure domain, for spreading replicas
	Actors   map[string]string // actor type -> code version
	Draining bool              // the node wants its replicas moved away
}

// metaWire is NodeMeta's gossip encoding: JSON with one-letter keys and empty
// fields omitted, so that as many actor types as possible fit in 512 bytes.
// Unknown keys are ignored on decode, which lets later versions add fields.
type metaWire struct {
	R string            `json:"r,omitempty"`
	G string            `json:"g,omitempty"`
	H string            `json:"h,omitempty"`
	N string            `json:"n,omitempty"`
	Z string            `json:"z,omitempty"`
	A map[string]string `json:"a,omitempty"`
	D bool              `json:"d,omitempty"`
}

// ErrMetaTooLarge is returned (wrapped, with the sizes) when a NodeMeta does
// not fit memberlist's per-node metadata limit.
var ErrMetaTooLarge = errors.New("cluster: node meta too large for gossip")

// ErrClosed is returned by calls made after Shutdown.
var ErrClosed = errors.New("cluster: membership is shut down")

func encodeNodeMeta(meta NodeMeta) ([]byte, error) {
	b, err := json.Marshal(metaWire{
		R: meta.RaftAddr, G: meta.GRPCAddr, H: meta.HTTPAddr, N: meta.NATSAddr,
		Z: meta.Zone, A: meta.Actors, D: meta.Draining,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: encode node meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes encoded (%d actor types), limit is %d",
			ErrMetaTooLarge, len(b), len(meta.Actors), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeNodeMeta(id string, b []byte) (NodeMeta, error) {
	var w metaWire
	if len(b) > 0 {
		if err := json.Unmarshal(b, &w); err != nil {
			return NodeMeta{ID: id}, fmt.Errorf("cluster: decode meta of %q: %w", id, err)
		}
	}
	return normalizeNodeMeta(NodeMeta{
		ID: id, RaftAddr: w.R, GRPCAddr: w.G, HTTPAddr: w.H, NATSAddr: w.N,
		Zone: w.Z, Actors: w.A, Draining: w.D,
	}), nil
}

// normalizeNodeMeta copies meta's map and turns an empty one into nil, so the
// local view of a node equals what the others decode from its gossip.
func normalizeNodeMeta(meta NodeMeta) NodeMeta {
	if len(meta.Actors) == 0 {
		meta.Actors = nil
	} else {
		meta.Actors = maps.Clone(meta.Actors)
	}
	return meta
}

// MemberState is a member's state as observed by this node. The zero value is
// deliberately invalid so an unset Member never reads as alive.
type MemberState int

const (
	// MemberAlive: gossip says the node is up and it answers our pings.
	MemberAlive MemberState = iota + 1
	// MemberSuspect: gossip still lists the node, but it did not answer this
	// node's last direct ping. It either recovers to alive or is declared
	// dead by memberlist's suspicion timeout.
	MemberSuspect
	// MemberDead: memberlist declared the node failed. It may come back.
	MemberDead
	// MemberLeft: the node left gracefully (Leave); it is not coming back
	// under this incarnation.
	MemberLeft
)

func (s MemberState) String() string {
	switch s {
	case MemberAlive:
		return "alive"
	case MemberSuspect:
		return "suspect"
	case MemberDead:
		return "dead"
	case MemberLeft:
		return "left"
	}
	return "MemberState(" + strconv.Itoa(int(s)) + ")"
}

// Member is one node as seen from here.
type Member struct {
	Meta  NodeMeta
	State MemberState
	Addr  string    // gossip host:port
	Since time.Time // when it entered State, as observed locally
}

// Config configures New.
type Config struct {
	Meta          NodeMeta
	BindAddr      string // host:port for gossip (TCP+UDP same port); host must be an IP or empty (all interfaces); port 0 picks a free port
	AdvertiseAddr string // optional ip:port others should dial (NAT, containers); port 0 means the bound port
	Logger        *slog.Logger
	// Fast is for tests on loopback: short probe, suspicion and gossip
	// intervals so a killed node is declared dead within about 1-3 s.
	Fast bool
	// SecretKey, when set (16, 24 or 32 bytes), encrypts and authenticates
	// gossip: a process without it can neither read nor join the cluster.
	SecretKey []byte
}

// Membership is this node's view of the cluster. All methods are safe for
// concurrent use.
type Membership struct {
	log      *slog.Logger
	logw     *memberlistLogWriter // memberlist's own log lines
	id       string
	ml       *memberlist.Memberlist
	addr     string
	every    time.Duration // suspect-probe period
	updateTO time.Duration // how long UpdateMeta waits for its broadcast

	metaMu sync.Mutex // serialises UpdateMeta so gossip order matches call order

	mu      sync.Mutex
	metaEnc []byte // this node's encoded meta, handed to memberlist
	selfMet NodeMeta
	members map[string]*memberEntry
	leaving map[string]bool // nodes that announced a graceful leave
	changes chan struct{}

	lifeMu sync.Mutex // orders Leave against Shutdown (memberlist panics on Leave after Shutdown)
	closed atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

type memberEntry struct {
	Member
	udp netip.AddrPort // parsed Addr, for pings
}

// leaveIntentMsg prefixes the user message a leaving node sends its peers.
const leaveIntentMsg byte = 1

// New starts gossiping as cfg.Meta.ID on cfg.BindAddr. The node is
// alone until Join.
func New(cfg Config) (*Membership, error) {
	if cfg.Meta.ID == "" {
		return nil, errors.New("cluster: membership needs Meta.ID (the node name)")
	}
	meta := normalizeNodeMeta(cfg.Meta)
	enc, err := encodeNodeMeta(meta)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}

	var conf *memberlist.Config
	every := time.Second
	if cfg.Fast {
		conf = gossipFastConfig()
		every = 200 * time.Millisecond
	} else {
		conf = memberlist.DefaultLANConfig()
	}
	conf.Name = meta.ID
	if len(cfg.SecretKey) > 0 {
		conf.SecretKey = cfg.SecretKey
	}
	if conf.BindAddr, conf.BindPort, err = splitGossipAddr(cfg.BindAddr, "BindAddr", true); err != nil {
		return nil, err
	}
	if conf.BindAddr == "" {
		conf.BindAddr = "0.0.0.0"
	}
	conf.AdvertiseAddr, conf.AdvertisePort = "", conf.BindPort
	if cfg.AdvertiseAddr != "" {
		if conf.AdvertiseAddr, conf.AdvertisePort, err = splitGossipAddr(cfg.AdvertiseAddr, "AdvertiseAddr", false); err != nil {
			return nil, err
		}
		// memberlist overwrites AdvertisePort with the dynamic port when
		// BindPort is 0; for a fixed bind port, 0 means "same as bind".
		if conf.AdvertisePort == 0 {
			conf.AdvertisePort = conf.BindPort
		}
	}
	m := &Membership{
		log:      logger,
		id:       meta.ID,
		every:    every,
		updateTO: 5 * time.Second,
		metaEnc:  enc,
		selfMet:  meta,
		members:  map[string]*memberEntry{},
		leaving:  map[string]bool{},
		changes:  make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	m.logw = &memberlistLogWriter{log: logger.With("component", "memberlist"), closed: &m.closed}
	conf.Logger = log.New(m.logw, "", 0)
	d := &membershipDelegate{m}
	conf.Delegate = d
	conf.Events = d

	// Create reports this node to NotifyJoin before returning, so the table
	// already holds self; the delegates never touch m.ml.
	ml, err := memberlist.Create(conf)
	if err != nil {
		return nil, fmt.Errorf("cluster: start gossip on %s: %w", cfg.BindAddr, err)
	}
	m.ml = ml
	m.addr = ml.LocalNode().Address()

	m.wg.Add(1)
	go m.probeLoop()
	return m, nil
}

// gossipFastConfig is memberlist's loopback config with everything shortened so
// tests see joins in milliseconds and deaths in about a second: a dead node is
// probed within 2 probe intervals, and for clusters of under 10 nodes the
// suspicion timeout is SuspicionMult probe intervals (with no peers left to
// confirm, i.e. n-2 < SuspicionMult-2; otherwise up to
// SuspicionMaxTimeoutMult times that, shortened by confirmations).
func gossipFastConfig() *memberlist.Config {
	c := memberlist.DefaultLocalConfig()
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.SuspicionMult = 4
	c.PushPullInterval = 2 * time.Second
	c.GossipToTheDeadTime = 5 * time.Second
	return c
}

// splitGossipAddr parses host:port where host must be an IP literal, because
// memberlist silently binds every interface for a host name and rejects one
// as an advertise address only at start-up.
func splitGossipAddr(s, what string, emptyHostOK bool) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("cluster: %s %q: %w", what, s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("cluster: %s %q: bad port", what, s)
	}
	if host == "" && !emptyHostOK {
		return "", 0, fmt.Errorf("cluster: %s %q: needs an IP", what, s)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", 0, fmt.Errorf("cluster: %s %q: host must be an IP address", what, s)
		}
	}
	return host, int(p), nil
}

// Addr is the gossip address others should Join, with port 0 resolved.
func (m *Membership) Addr() string { return m.addr }

// Join contacts the given gossip addresses and syncs state with each; it
// returns how many answered. One is enough: gossip finds the rest.
func (m *Membership) Join(addrs []string) (int, error) {
	if m.closed.Load() {
		return 0, ErrClosed
	}
	n, err := m.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("cluster: join %v: %w", addrs, err)
	}
	return n, nil
}

// Members returns every member seen so far, this node included, sorted by ID.
// Dead and left members stay until Forget, so the control group can still see
// whom it has to move replicas away from.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members))
	for _, e := range m.members {
		mem := e.Member
		mem.Meta.Actors = maps.Clone(mem.Meta.Actors)
		out = append(out, mem)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Meta.ID, b.Meta.ID) })
	return out
}

// Changes receives a value whenever a member joins, leaves, dies, becomes
// suspect or alive again, changes meta, or is forgotten. Sends are coalesced
// into a buffer of one and never block, so a slow reader cannot stall gossip;
// readers should re-read Members() after each receive.
func (m *Membership) Changes() <-chan struct{} { return m.changes }

func (m *Membership) signal() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// UpdateMeta replaces this node's meta and gossips it. The ID cannot change
// (it is the gossip node name); an empty ID means "unchanged". It waits until
// the update has been broadcast (at most 5 s); on timeout the new meta is
// still in effect locally and keeps spreading, and an error says so.
func (m *Membership) UpdateMeta(meta NodeMeta) error {
	if meta.ID == "" {
		meta.ID = m.id
	}
	if meta.ID != m.id {
		return fmt.Errorf("cluster: UpdateMeta cannot change the node id from %q to %q", m.id, meta.ID)
	}
	if m.closed.Load() {
		return ErrClosed
	}
	meta = normalizeNodeMeta(meta)
	enc, err := encodeNodeMeta(meta)
	if err != nil {
		return err
	}
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	m.mu.Lock()
	m.metaEnc, m.selfMet = enc, meta
	m.mu.Unlock()
	// memberlist calls NotifyUpdate for ourselves from UpdateNode, which
	// records the new meta in the table and signals Changes.
	if err := m.ml.UpdateNode(m.updateTO); err != nil {
		return fmt.Errorf("cluster: meta updated locally, gossip not confirmed: %w", err)
	}
	return nil
}

// Forget drops a dead or left member from Members(). It is a no-op for live
// or suspect members and for this node: forgetting those would hide a node
// that is still there. A forgotten node that comes back reappears.
func (m *Membership) Forget(id string) {
	m.mu.Lock()
	e := m.members[id]
	ok := id != m.id && e != nil && (e.State == MemberDead || e.State == MemberLeft)
	if ok {
		delete(m.members, id)
		delete(m.leaving, id)
	}
	m.mu.Unlock()
	if ok {
		m.signal()
	}
}

// Leave tells the cluster this node is going away for good, so the others
// record it as MemberLeft instead of MemberDead and need not wait out a
// suspicion timeout. Call Shutdown afterwards; a node cannot rejoin after
// Leave (a memberlist restriction), only a new Membership can.
//
// Because memberlist does not tell its listeners whether a node left or
// failed, Leave first sends every live peer a leave intent over TCP (at most
// half of timeout), then gossips memberlist's leave and waits for it to go
// out (the rest of timeout). timeout <= 0 means no overall limit (each intent
// send is still bounded by memberlist's TCP timeout).
func (m *Membership) Leave(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	start := time.Now()

	m.mu.Lock()
	m.leaving[m.id] = true
	var peers []*memberlist.Node
	for id, e := range m.members {
		if id != m.id && (e.State == MemberAlive || e.State == MemberSuspect) && e.udp.IsValid() {
			peers = append(peers, &memberlist.Node{Name: id, Addr: e.udp.Addr().AsSlice(), Port: e.udp.Port()})
		}
	}
	m.mu.Unlock()

	m.announceLeave(peers, timeout/2)

	rest := time.Duration(0)
	if timeout > 0 {
		rest = max(timeout-time.Since(start), time.Millisecond)
	}
	if err := m.ml.Leave(rest); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// announceLeave sends the leave intent to peers in parallel and waits for the
// sends, or for wait if positive. Stragglers are tracked by m.wg and end
// within memberlist's TCP timeout.
func (m *Membership) announceLeave(peers []*memberlist.Node, wait time.Duration) {
	msg := append([]byte{leaveIntentMsg}, m.id...)
	var sends sync.WaitGroup
	for _, p := range peers {
		sends.Add(1)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer sends.Done()
			if err := m.ml.SendReliable(p, msg); err != nil {
				m.log.Warn("leave intent not delivered; peer will see this node as dead",
					"peer", p.Name, "err", err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { sends.Wait(); close(done) }()
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-done:
	case <-timer:
		m.log.Warn("leave intents still in flight at deadline", "peers", len(peers))
	}
}

// Shutdown stops gossip without leaving: the others will suspect this node
// and then declare it dead. Safe to call more than once.
func (m *Membership) Shutdown() error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.closed.Swap(true) {
		return nil
	}
	close(m.stop)
	// Stop our prober and any leave-intent sends before the transport goes,
	// so they neither fail noisily nor mark every peer suspect on the way
	// out.
	m.wg.Wait()
	if err := m.ml.Shutdown(); err != nil {
		return fmt.Errorf("cluster: gossip shutdown: %w", err)
	}
	return nil
}

// probeLoop keeps MemberSuspect up to date. memberlist knows when it suspects
// a node but does not say, so we ping the members it still lists ourselves,
// once per period (one small UDP packet per peer per second in production,
// through memberlist's own Ping so no extra socket is needed).
func (m *Membership) probeLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.probeOnce()
		}
	}
}

func (m *Membership) probeOnce() {
	type target struct {
		id   string
		addr netip.AddrPort
		ok   bool
	}
	m.mu.Lock()
	var ts []*target
	for id, e := range m.members {
		if id != m.id && (e.State == MemberAlive || e.State == MemberSuspect) && e.udp.IsValid() {
			ts = append(ts, &target{id: id, addr: e.udp})
		}
	}
	m.mu.Unlock()
	if len(ts) == 0 {
		return
	}

	var wg sync.WaitGroup
	for _, tg := range ts {
		wg.Go(func() {
			// Ping waits at most the configured ProbeTimeout.
			_, err := m.ml.Ping(tg.id, net.UDPAddrFromAddrPort(tg.addr))
			tg.ok = err == nil
		})
	}
	wg.Wait()

	changed := false
	now := time.Now()
	m.mu.Lock()
	for _, tg := range ts {
		e := m.members[tg.id]
		// Skip results made stale while we pinged: gossip declared the node
		// dead or left, or it came back on another address.
		if e == nil || e.udp != tg.addr {
			continue
		}
		switch {
		case !tg.ok && e.State == MemberAlive:
			e.State, e.Since, changed = MemberSuspect, now, true
		case tg.ok && e.State == MemberSuspect:
			e.State, e.Since, changed = MemberAlive, now, true
		}
	}
	m.mu.Unlock()
	if changed {
		m.signal()
	}
}

// memberEvent is which EventDelegate callback observe is handling.
type memberEvent int

const (
	memberJoined  memberEvent = iota // NotifyJoin: new, or back from dead/left
	memberGone                       // NotifyLeave: failed or left, see leaving
	memberUpdated                    // NotifyUpdate: meta changed
)

// observe records a memberlist event for node n.
func (m *Membership) observe(n *memberlist.Node, ev memberEvent) {
	id := n.Name
	addr := n.Address()
	udp, _ := netip.ParseAddrPort(addr)
	var meta NodeMeta
	if id == m.id {
		m.mu.Lock()
		meta = m.selfMet
		m.mu.Unlock()
	} else {
		var err error
		if meta, err = decodeNodeMeta(id, n.Meta); err != nil {
			m.log.Warn("ignoring undecodable node meta", "node", id, "err", err)
		}
	}

	now := time.Now()
	m.mu.Lock()
	e := m.members[id]
	if e == nil {
		e = &memberEntry{Member: Member{State: MemberAlive, Since: now}}
		m.members[id] = e
	}
	switch ev {
	case memberJoined:
		// A join after a leave is the node coming back (restart).
		delete(m.leaving, id)
		if e.State != MemberAlive {
			e.State, e.Since = MemberAlive, now
		}
	case memberGone:
		st := MemberDead
		if m.leaving[id] {
			st = MemberLeft
		}
		if e.State != st {
			e.State, e.Since = st, now
		}
	}
	e.Meta, e.Addr, e.udp = meta, addr, udp
	m.mu.Unlock()
	m.signal()
}

// leaveIntent records that id announced a graceful leave. If memberlist's
// dead message beat the intent here, the member is corrected to left.
func (m *Membership) leaveIntent(id string) {
	m.mu.Lock()
	m.leaving[id] = true
	e := m.members[id]
	changed := e != nil && e.State == MemberDead
	if changed {
		e.State, e.Since = MemberLeft, time.Now()
	}
	m.mu.Unlock()
	if changed {
		m.signal()
	}
}

// membershipDelegate adapts Membership to memberlist's callbacks without
// exporting them on Membership. memberlist may call these from several of
// its goroutines, with its node lock held: they must not block or call back
// into memberlist.
type membershipDelegate struct{ m *Membership }

func (d *membershipDelegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	return slices.Clone(d.m.metaEnc) // size checked against MetaMaxSize when set
}

func (d *membershipDelegate) NotifyMsg(b []byte) {
	if len(b) > 1 && b[0] == leaveIntentMsg {
		d.m.leaveIntent(string(b[1:]))
	}
}

func (d *membershipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *membershipDelegate) LocalState(join bool) []byte                { return nil }
func (d *membershipDelegate) MergeRemoteState(buf []byte, join bool)     {}
func (d *membershipDelegate) NotifyJoin(n *memberlist.Node)              { d.m.observe(n, memberJoined) }
func (d *membershipDelegate) NotifyLeave(n *memberlist.Node)             { d.m.observe(n, memberGone) }
func (d *membershipDelegate) NotifyUpdate(n *memberlist.Node)            { d.m.observe(n, memberUpdated) }

// memberlistLogWriter turns memberlist's "[LEVEL] memberlist: msg" lines into
// slog records, dropping DEBUG and INFO: memberlist logs every failed probe
// and every join at those levels, which would drown a node's own log. It also
// drops complaints about closed sockets once Shutdown has begun: memberlist
// closes its transport before stopping its gossip timers, so a send or two
// failing that way is part of a normal shutdown.
//
// Anyone who can reach the gossip port can make memberlist complain (junk UDP
// packets each log a decode error), so the lines kept are rate-limited: at
// most one a second, the next saying how many were suppressed; every one is
// counted in lines (the rhizon.gossip.log_lines metric).
type memberlistLogWriter struct {
	log    *slog.Logger
	closed *atomic.Bool
	limit  logutil.Limiter
	lines  atomic.Uint64
}

func (w *memberlistLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\r\n")
	level := slog.LevelWarn
	switch {
	case strings.HasPrefix(line, "[DEBUG]"), strings.HasPrefix(line, "[INFO]"):
		return len(p), nil
	case w.closed.Load() && strings.Contains(line, net.ErrClosed.Error()):
		return len(p), nil
	case strings.HasPrefix(line, "[ERR]"), strings.HasPrefix(line, "[ERROR]"):
		level = slog.LevelError
	}
	if i := strings.IndexByte(line, ']'); strings.HasPrefix(line, "[") && i > 0 {
		line = strings.TrimSpace(line[i+1:])
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.lines.Add(1)
	n, ok := w.limit.Allow(time.Now())
	if !ok {
		return len(p), nil
	}
	if n > 0 {
		w.log.Log(context.Background(), level, line, "suppressed", n)
	} else {
		w.log.Log(context.Background(), level, line)
	}
	return len(p), nil
}

// Key derives memberlist's 32-byte key from the cluster secret, so
// gossip is encrypted and only nodes holding the secret can join.
func Key(secret string) []byte {
	if secret == "" {
		return nil
	}
	k := sha256.Sum256([]byte("rhizon gossip key\x00" + secret))
	return k[:]
}

// LogLines is how many warnings and errors memberlist logged, kept or
// suppressed by the log's rate limit.
func (m *Membership) LogLines() uint64 {
	if m.logw == nil {
		return 0
	}
	return m.logw.lines.Load()
}
