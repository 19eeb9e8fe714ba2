package raftmux

// Multiplexed Raft transport.
//
// A node hosts up to thousands of shard replicas plus a replica of the control
// group, each its own Raft group. A listening port per group would mean
// thousands of ports to allocate, advertise and open in firewalls, so every
// group of a node shares one TCP listener (DESIGN.md §5). Each group still gets
// a stock raft.NetworkTransport; only its StreamLayer is ours. A dialer names
// the group in a short header at the start of every connection and the Mux's
// accept loop routes the connection to that group's StreamLayer.
//
// Connection header (7 bytes, written once by the dialer before any Raft
// traffic):
//
//	offset 0  2 bytes  magic 'R' 'x'   (rejects strays: health checks, other protocols)
//	offset 2  1 byte   version 2       (version 1 had no authentication; refused)
//	offset 3  4 bytes  group id, uint32 big-endian (ControlGroup = 0xFFFFFFFF)
//
// Then both sides prove they know the cluster secret (muxauth.go): the dialer
// sends a nonce, the acceptor its own nonce and a MAC over both, the dialer
// its MAC. Without it anyone who reached the port could append entries to
// any shard's log. Connections are pooled by NetworkTransport, so the round
// trip is paid once per connection. A connection to a group the peer does
// not host is simply closed after the handshake, which the dialing Raft sees
// as a failed RPC and retries with its usual backoff.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/internal/logutil"
)

// ControlGroup is the group id of the cluster's control Raft group. It is the
// top of the uint32 range so it can never collide with a shard id (shards are
// numbered from 0 and bounded by MaxShards).
const ControlGroup uint32 = math.MaxUint32

// Wire header constants; see the file comment for the layout.
const (
	muxMagic0  byte = 'R'
	muxMagic1  byte = 'x'
	muxVersion byte = 2
	// muxVersionUnauthenticated is the older header without the handshake,
	// accepted only with Config.AcceptUnauthenticated.
	muxVersionUnauthenticated byte = 1
)

// muxHeaderSize is the header's length in bytes.
const muxHeaderSize = 7

// Defaults and fixed tuning of the mux and of each group's NetworkTransport.
const (
	defaultHandshakeTimeout     = 5 * time.Second
	defaultMaxPendingHandshakes = 1024
	// muxAcceptBacklog bounds the connections routed to a group but not yet
	// taken by its NetworkTransport. Its listen loop only spawns a goroutine
	// per connection, so the backlog fills only when the transport is stuck
	// or gone; then connections are dropped instead of piling up.
	muxAcceptBacklog = 16
	// muxMaxPool is how many idle outbound connections NetworkTransport keeps
	// per peer and group. Raft uses one for heartbeats, one for the append
	// pipeline and occasionally one for votes; more would only hold sockets
	// across thousands of groups.
	muxMaxPool = 3
	// muxRPCTimeout is NetworkTransport's I/O deadline per RPC (scaled up for
	// snapshots) and its dial timeout.
	muxRPCTimeout = 10 * time.Second
	// muxMaxInFlight turns hashicorp/raft's append pipeline off (it needs 2
	// or more): Raft then replicates with one AppendEntries in flight per
	// follower, each carrying everything appended meanwhile. With its default
	// of 2, the pipeline's channels are unbuffered and it can deadlock when a
	// follower answers Success=false: the decoder returns, the send loop may
	// park one more request on the in-progress channel, and the pipeline is
	// closed only when that loop returns. The follower then gets heartbeats
	// but no entry ever again, and Shutdown hangs (grafana/pyroscope#5518
	// found the same; TestMuxTransportOffersNoPipeline).
	muxMaxInFlight = 1
)

// ErrClosed is returned by a closed Mux and by its groups' stream layers.
var ErrClosed = errors.New("cluster: raft mux closed")

// Config configures Listen.
type Config struct {
	// BindAddr is the host:port to listen on (port 0 picks a free port).
	BindAddr string
	// AdvertiseAddr is the address peers dial and the address every group's
	// transport reports as its own (it ends up in Raft configurations, so it
	// must be reachable from other nodes). Default: the listener's address,
	// refused when that is a wildcard (0.0.0.0 or ::) because peers cannot
	// dial it.
	AdvertiseAddr string
	Logger        *slog.Logger
	// Secret is the cluster secret: connections are accepted from, and
	// made to, only muxes that know it. Required.
	Secret string
	// TLS, when set, wraps every connection in TLS before its header: the
	// node presents TLS.Certificates and verifies the peer it dials against
	// TLS.RootCAs (nil: the system's roots) and the address's host. Every
	// node of a cluster needs it, or none. The cluster secret still
	// authenticates both ends.
	TLS *tls.Config
	// AcceptUnauthenticated also accepts the version 1 header of older
	// nodes, which do not authenticate, and speaks it to a peer that
	// closes on version 2 (for muxLegacyFor). For a rolling upgrade from
	// such a version only: it lets anyone who reaches the port speak Raft.
	AcceptUnauthenticated bool
	// HandshakeTimeout bounds reading a connection's header and handing the
	// connection to its group (default 5s).
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes bounds connections accepted but not yet routed
	// (default 1024). It caps the goroutines a connection flood can create;
	// beyond it the oldest pending connection is closed to make room, so
	// idle connections cannot keep peers out.
	MaxPendingHandshakes int
	// HeartbeatLinger is how long a heartbeat may wait for others to the
	// same peer, to travel with them (default DefaultHeartbeatLinger;
	// negative: each group sends its own). Keep it a small fraction of the
	// groups' Raft HeartbeatTimeout: it delays every periodic heartbeat.
	HeartbeatLinger time.Duration
}

// Mux owns a node's Raft listener and routes inbound connections to the
// registered groups' transports.
type Mux struct {
	ln        net.Listener
	advertise muxAddr
	log       *slog.Logger
	hsTimeout time.Duration
	hsSlots   chan struct{} // semaphore of pending handshakes
	key       []byte        // derived from the cluster secret (muxauth.go)
	acceptV1  bool          // Config.AcceptUnauthenticated
	tls       *tls.Config   // Config.TLS
	legacy    muxLegacy     // peers that closed on version 2, when acceptV1

	ctx    context.Context // canceled by Close: aborts handshakes and dials
	cancel context.CancelFunc

	filter atomic.Pointer[func(group uint32, addr string) error]

	mu      sync.Mutex
	closed  bool
	groups  map[uint32]*muxLayer
	pending map[net.Conn]time.Time // accepted, header not yet routed; when accepted

	wg        sync.WaitGroup // accept loop and handshake goroutines
	closeOnce sync.Once
	closeErr  error

	warnLimit logutil.Limiter
	evicted   atomic.Uint64 // pending handshakes closed to make room (takeSlot)

	beats *beats // coalesced heartbeats (beats.go)
}

// Listen opens the node's Raft listener and starts routing connections.
func Listen(cfg Config) (*Mux, error) {
	if cfg.BindAddr == "" {
		return nil, errors.New("cluster: raft mux: BindAddr is required")
	}
	if cfg.Secret == "" {
		return nil, errors.New("cluster: raft mux: Secret is required: peers authenticate with it")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	if cfg.MaxPendingHandshakes <= 0 {
		cfg.MaxPendingHandshakes = defaultMaxPendingHandshakes
	}
	// Validate the advertise address before binding so a bad configuration
	// does not leave a port briefly open.
	if cfg.AdvertiseAddr != "" {
		if err := checkAdvertise(cfg.AdvertiseAddr); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: raft mux: listen %s: %w", cfg.BindAddr, err)
	}
	adv := cfg.AdvertiseAddr
	if adv == "" {
		adv = ln.Addr().String()
		if err := checkAdvertise(adv); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("cluster: raft mux: bind address %s is not dialable by peers (%v); set an advertise address", cfg.BindAddr, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		ln:        ln,
		advertise: muxAddr(adv),
		log:       cfg.Logger.With("component", "raft-mux"),
		hsTimeout: cfg.HandshakeTimeout,
		hsSlots:   make(chan struct{}, cfg.MaxPendingHandshakes),
		key:       muxKey(cfg.Secret),
		acceptV1:  cfg.AcceptUnauthenticated,
		tls:       cfg.TLS,
		ctx:       ctx,
		cancel:    cancel,
		groups:    make(map[uint32]*muxLayer),
		pending:   make(map[net.Conn]time.Time),
	}
	linger := cfg.HeartbeatLinger
	if linger == 0 {
		linger = DefaultHeartbeatLinger
	}
	m.beats = newBeats(m, linger)
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

// checkAdvertise refuses addresses a peer cannot dial: malformed, port 0, or
// a wildcard IP.
func checkAdvertise(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("cluster: raft mux: advertise address %q: %w", addr, err)
	}
	if port == "" || port == "0" {
		return fmt.Errorf("cluster: raft mux: advertise address %q needs a non-zero port", addr)
	}
	if host == "" {
		return fmt.Errorf("cluster: raft mux: advertise address %q has no host", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("cluster: raft mux: advertise address %q is a wildcard address", addr)
	}
	return nil
}

// Addr is the advertised address; every group's transport reports it as its
// LocalAddr.
func (m *Mux) Addr() raft.ServerAddress { return raft.ServerAddress(m.advertise) }

// Transport registers group and returns its Raft transport. Closing the
// transport (raft.Raft.Shutdown does) unregisters the group, so a replica
// removed from this node can later be added back under the same id; a caller
// whose raft.NewRaft fails must Close the transport itself for the same
// reason. It fails if the group is registered already or the mux is closed.
func (m *Mux) Transport(group uint32) (*GroupTransport, error) {
	l, err := m.register(group)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("raft-net.g%d", group)
	if group == ControlGroup {
		name = "raft-net.control"
	}
	glog := m.log.With("group", groupLabel(group))
	t := &GroupTransport{m: m, group: group, NetworkTransport: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:          l,
		MaxPool:         muxMaxPool,
		MaxRPCsInFlight: muxMaxInFlight,
		Timeout:         muxRPCTimeout,
		Logger:          logutil.HCLog(name, glog),
	})}
	m.mu.Lock()
	if m.closed {
		// Close ran between register and here and closed only the layer;
		// the transport's listen goroutine must be stopped too.
		m.mu.Unlock()
		_ = t.Close()
		return nil, ErrClosed
	}
	l.trans = t
	m.mu.Unlock()
	return t, nil
}

func (m *Mux) register(group uint32) (*muxLayer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if _, ok := m.groups[group]; ok {
		return nil, fmt.Errorf("cluster: raft mux: group %s is already registered", groupLabel(group))
	}
	if group == beatGroup {
		return nil, fmt.Errorf("cluster: raft mux: group %d is reserved for heartbeat links", group)
	}
	ctx, cancel := context.WithCancel(m.ctx)
	l := &muxLayer{
		m:        m,
		group:    group,
		acceptCh: make(chan net.Conn, muxAcceptBacklog),
		done:     make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		conns:    make(map[*muxConn]struct{}),
	}
	m.groups[group] = l
	return l, nil
}

// unregister drops l if it is still the registered layer of its group (a
// newer registration of the same id must survive a late close of the old).
func (m *Mux) unregister(l *muxLayer) {
	m.mu.Lock()
	if m.groups[l.group] == l {
		delete(m.groups, l.group)
	}
	m.mu.Unlock()
}

// SetDialFilter installs a fault-injection hook: while f is non-nil, every
// outbound dial of every group first asks f, and fails with its error. Setting
// a filter also closes the established outbound connections it rejects,
// because NetworkTransport reuses pooled connections and would otherwise keep
// talking through the "partition". Inbound connections are untouched, so f
// cuts only this node's outbound Raft traffic (its RPC requests; it still
// answers requests from peers). Pass nil to heal.
func (m *Mux) SetDialFilter(f func(group uint32, addr string) error) {
	if f == nil {
		m.filter.Store(nil)
		return
	}
	m.filter.Store(&f)
	m.mu.Lock()
	layers := make([]*muxLayer, 0, len(m.groups))
	for _, l := range m.groups {
		layers = append(layers, l)
	}
	m.mu.Unlock()
	for _, l := range layers {
		for _, c := range l.dialedConns() {
			if err := f(l.group, c.addr); err != nil {
				c.kill(fmt.Errorf("cluster: raft mux: dial filter: %w", err))
			}
		}
	}
}

// dialFilter returns the error of the installed filter for (group, addr).
func (m *Mux) dialFilter(group uint32, addr string) error {
	if p := m.filter.Load(); p != nil {
		if err := (*p)(group, addr); err != nil {
			return fmt.Errorf("cluster: raft mux: dial filter: %w", err)
		}
	}
	return nil
}

// Close stops accepting, closes every registered group's transport (with its
// connections) and waits for the mux's own goroutines. Raft instances using
// those transports should be shut down by their owners; their RPCs fail from
// now on.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		layers := make([]*muxLayer, 0, len(m.groups))
		for _, l := range m.groups {
			layers = append(layers, l)
		}
		pending := make([]net.Conn, 0, len(m.pending))
		for c := range m.pending {
			pending = append(pending, c)
		}
		m.mu.Unlock()

		m.cancel()
		if err := m.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			m.closeErr = err
		}
		// Unblock handshakes waiting for a header.
		for _, c := range pending {
			_ = c.Close()
		}
		for _, l := range layers {
			if t := l.transport(); t != nil {
				_ = t.Close() // closes l via the StreamLayer
			} else {
				_ = l.Close()
			}
		}
		m.beats.close()
		m.wg.Wait()
	})
	return m.closeErr
}

// Stats are a mux's counters, for the node's metrics.
type Stats struct {
	HeartbeatsCarried int64  // heartbeats sent coalesced
	HeartbeatFrames   int64  // frames that carried them
	HandshakesEvicted uint64 // pending handshakes closed to make room
}

// Stats returns the mux's counters so far.
func (m *Mux) Stats() Stats {
	return Stats{
		HeartbeatsCarried: m.beats.carried.Load(),
		HeartbeatFrames:   m.beats.frames.Load(),
		HandshakesEvicted: m.evicted.Load(),
	}
}
