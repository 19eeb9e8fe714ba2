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
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
		Stream:  l,
		MaxPool: muxMaxPool,
		Timeout: muxRPCTimeout,
		Logger:  logutil.HCLog(name, glog),
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

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || m.ctx.Err() != nil {
				return
			}
			// Resource exhaustion (EMFILE and the like): back off rather
			// than spin, as net/http does.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			m.warn("raft mux: accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-m.ctx.Done():
				return
			}
		}
		delay = 0
		if !m.takeSlot(hostOf(c)) {
			_ = c.Close()
			return
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			_ = c.Close()
			<-m.hsSlots
			return
		}
		m.pending[c] = time.Now()
		m.wg.Add(1)
		m.mu.Unlock()
		// One goroutine per connection: a peer that connects and sends
		// nothing must not hold up everyone else's handshake.
		go m.handshake(c)
	}
}

// takeSlot takes a handshake slot for a connection from host. When all are
// taken, or host already holds its share (a quarter of them), the oldest
// pending connection (of host, when over its share) is closed to free one:
// a real peer finishes its handshake within a round trip, so the oldest is
// the one most likely idle, and connections that send nothing cannot keep
// peers out. False when the mux closes.
func (m *Mux) takeSlot(host string) bool {
	perHost := max(cap(m.hsSlots)/4, 1)
	for {
		m.mu.Lock()
		fromHost := 0
		for c := range m.pending {
			if hostOf(c) == host {
				fromHost++
			}
		}
		m.mu.Unlock()
		if fromHost < perHost {
			select {
			case m.hsSlots <- struct{}{}:
				return true
			default:
			}
		}
		m.mu.Lock()
		var oldest net.Conn
		var since time.Time
		for c, at := range m.pending {
			if fromHost >= perHost && hostOf(c) != host {
				continue
			}
			if oldest == nil || at.Before(since) {
				oldest, since = c, at
			}
		}
		if oldest != nil {
			// Closing it ends its handshake, which frees the slot; no
			// longer pending, it is not chosen twice.
			delete(m.pending, oldest)
			_ = oldest.Close()
		}
		m.mu.Unlock()
		if oldest != nil {
			m.evicted.Add(1)
			m.warn("raft mux: handshake slots full; closing the oldest pending connection",
				"remote", oldest.RemoteAddr().String(), "pending_for", time.Since(since).Round(time.Millisecond))
		}
		select {
		case m.hsSlots <- struct{}{}:
			return true
		case <-m.ctx.Done():
			return false
		}
	}
}

// hostOf is the IP a connection comes from.
func hostOf(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	h, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	return h
}

// handshake reads c's header and hands c to its group, or closes it.
func (m *Mux) handshake(raw net.Conn) {
	defer m.wg.Done()
	defer func() { <-m.hsSlots }()
	routed := false
	c := raw // what the rest reads and writes: raw, or TLS over it
	defer func() {
		m.mu.Lock()
		delete(m.pending, raw)
		m.mu.Unlock()
		if !routed {
			_ = c.Close()
		}
	}()
	remote := c.RemoteAddr().String()
	deadline := time.Now().Add(m.hsTimeout)
	_ = raw.SetDeadline(deadline)
	if m.tls != nil {
		// TLS first, so that the challenge below is bound to this
		// channel: a relay of it could not be used over another one.
		tc := tls.Server(raw, m.tls)
		c = tc
		if err := tc.HandshakeContext(m.ctx); err != nil {
			if m.ctx.Err() == nil {
				m.warn("raft mux: TLS handshake failed", "remote", remote, "err", err)
			}
			return
		}
	}
	var hdr [muxHeaderSize]byte
	// io.ReadFull straight from the conn, never through a buffered reader:
	// any byte read past the header belongs to NetworkTransport's decoder.
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		if m.ctx.Err() == nil {
			m.warn("raft mux: no connection header", "remote", remote, "err", err)
		}
		return
	}
	if hdr[0] != muxMagic0 || hdr[1] != muxMagic1 {
		m.warn("raft mux: bad magic; not a raft mux peer", "remote", remote, "magic", fmt.Sprintf("%x", hdr[:2]))
		return
	}
	v1 := hdr[2] == muxVersionUnauthenticated && m.acceptV1
	if hdr[2] != muxVersion && !v1 {
		hint := ""
		if hdr[2] < muxVersion {
			hint = "a node of an older version, which does not authenticate its Raft connections: upgrade it"
		}
		m.warn("raft mux: unsupported header version", "remote", remote, "version", hdr[2], "hint", hint)
		return
	}
	if v1 {
		m.warn("raft mux: accepted an unauthenticated connection (--raft-accept-unauthenticated)", "remote", remote)
	} else if err := m.authenticate(c, hdr[:]); err != nil {
		if m.ctx.Err() == nil {
			m.warn("raft mux: connection refused", "remote", remote, "err", err)
		}
		return
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return
	}
	group := binary.BigEndian.Uint32(hdr[3:])
	if group == beatGroup {
		m.beats.serve(c)
		routed = true
		return
	}
	m.mu.Lock()
	l := m.groups[group]
	m.mu.Unlock()
	if l == nil {
		// Routine while replicas move: a peer keeps contacting a replica
		// this node no longer (or not yet) hosts until its configuration
		// catches up. Debug, not warn.
		m.log.Debug("raft mux: connection for a group not hosted here", "remote", remote, "group", groupLabel(group))
		return
	}
	routed = l.deliver(c, deadline)
}

// warn logs at most once per logutil.LimitEvery, counting what it suppressed.
func (m *Mux) warn(msg string, args ...any) {
	if n, ok := m.warnLimit.Allow(time.Now()); ok {
		if n > 0 {
			args = append(args, "suppressed", n)
		}
		m.log.Warn(msg, args...)
	}
}

// muxLayer is one group's raft.StreamLayer: Accept yields the connections the
// mux routed to the group, Dial connects to a peer's mux and names the group.
// It tracks its open connections because NetworkTransport.Close closes
// neither its pooled outbound connections nor its inbound ones (its handlers
// sit in a blocking read with no deadline), so without this every closed
// group would leak sockets and goroutines until the peer hung up.
type muxLayer struct {
	m        *Mux
	group    uint32
	acceptCh chan net.Conn
	done     chan struct{}
	ctx      context.Context // canceled on close: aborts in-flight dials
	cancel   context.CancelFunc

	mu     sync.Mutex
	closed bool
	conns  map[*muxConn]struct{}
	trans  *GroupTransport // guarded by m.mu
}

var _ raft.StreamLayer = (*muxLayer)(nil)

func (l *muxLayer) transport() *GroupTransport {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	return l.trans
}

// Accept implements net.Listener.
func (l *muxLayer) Accept() (net.Conn, error) {
	// Prefer reporting closure over handing out a backlog conn that close
	// has already shut.
	select {
	case <-l.done:
		return nil, ErrClosed
	default:
	}
	select {
	case c := <-l.acceptCh:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	}
}

// Close implements net.Listener. NetworkTransport.Close calls it; it
// unregisters the group and closes all of the group's connections.
func (l *muxLayer) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	conns := make([]*muxConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.conns = nil
	close(l.done)
	l.mu.Unlock()

	l.cancel()
	l.m.unregister(l)
	for _, c := range conns {
		_ = c.Conn.Close()
	}
	return nil
}

// Addr implements net.Listener; NetworkTransport.LocalAddr reports it, so it
// is the advertised address, not the bound one.
func (l *muxLayer) Addr() net.Addr { return l.m.advertise }

// Dial implements raft.StreamLayer: TCP to the peer's mux, then the header.
func (l *muxLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	addr := string(address)
	if err := l.m.dialFilter(l.group, addr); err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = l.m.hsTimeout
	}
	c, err := l.m.dialMux(l.ctx, addr, l.group, timeout)
	if err != nil {
		return nil, err
	}
	mc := l.track(c, addr, true)
	if mc == nil {
		_ = c.Close()
		return nil, ErrClosed
	}
	// Check again now that the conn is tracked: a filter installed while we
	// were dialing may have swept before the conn was visible.
	if err := l.m.dialFilter(l.group, addr); err != nil {
		_ = mc.Close()
		return nil, err
	}
	return mc, nil
}

// dialMux connects to the mux at addr, names group in the header and
// authenticates (muxauth.go).
func (m *Mux) dialMux(ctx context.Context, addr string, group uint32, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, err
	}
	var hdr [muxHeaderSize]byte
	hdr[0], hdr[1], hdr[2] = muxMagic0, muxMagic1, muxVersion
	binary.BigEndian.PutUint32(hdr[3:], group)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if m.tls != nil {
		cfg := m.tls.Clone()
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			if ctx.Err() != nil {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("cluster: raft mux: %s: TLS: %w", addr, err)
		}
		c = tc
	}
	if m.acceptV1 && m.legacy.is(addr, time.Now()) {
		hdr[2] = muxVersionUnauthenticated
		_, err = c.Write(hdr[:])
	} else {
		err = m.authenticateTo(c, hdr[:])
	}
	if err != nil {
		_ = c.Close()
		if ctx.Err() != nil {
			return nil, ErrClosed
		}
		if m.acceptV1 && errors.Is(err, errMuxNoChallenge) {
			// An older node closed on the version: speak its version
			// for a while.
			m.legacy.mark(addr, time.Now())
			m.warn("raft mux: peer closed on the authenticated header; speaking the old one to it", "peer", addr)
		}
		return nil, fmt.Errorf("cluster: raft mux: %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// muxLegacyFor is how long a peer that closed on the version 2 header gets
// version 1 headers before version 2 is tried again.
const muxLegacyFor = 30 * time.Second

// muxLegacy remembers peers that closed on version 2.
type muxLegacy struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (l *muxLegacy) mark(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.until == nil {
		l.until = map[string]time.Time{}
	}
	l.until[addr] = now.Add(muxLegacyFor)
}

func (l *muxLegacy) is(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Before(l.until[addr])
}

// deliver hands an accepted, handshaken conn to the group's Accept, waiting
// at most until deadline for room in the backlog. It reports whether it took
// ownership of c.
func (l *muxLayer) deliver(c net.Conn, deadline time.Time) bool {
	mc := l.track(c, "", false)
	if mc == nil {
		return false
	}
	select {
	case l.acceptCh <- mc:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case l.acceptCh <- mc:
		// Even if the layer closed meanwhile, Close closed every tracked
		// conn, this one included.
		return true
	case <-l.done:
	case <-l.m.ctx.Done():
	case <-t.C:
		l.m.warn("raft mux: group is not accepting connections; dropping one", "group", groupLabel(l.group))
	}
	_ = mc.Close()
	return true
}

// track registers c as open; nil when the layer is closed.
func (l *muxLayer) track(c net.Conn, addr string, dialed bool) *muxConn {
	mc := &muxConn{Conn: c, layer: l, addr: addr, dialed: dialed}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.conns[mc] = struct{}{}
	return mc
}

func (l *muxLayer) untrack(c *muxConn) {
	l.mu.Lock()
	delete(l.conns, c) // no-op on a closed layer's nil map
	l.mu.Unlock()
}

func (l *muxLayer) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *muxLayer) dialedConns() []*muxConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*muxConn
	for c := range l.conns {
		if c.dialed {
			out = append(out, c)
		}
	}
	return out
}

// muxConn is a connection tracked by its group's layer.
type muxConn struct {
	net.Conn
	layer  *muxLayer
	addr   string // dialed address; empty for accepted conns
	dialed bool
	cause  atomic.Pointer[error] // why the layer killed it (dial filter)
}

// Read maps errors caused by our own closing: after the group closed, an
// inbound handler blocked in Read would otherwise log "failed to decode
// incoming command: use of closed network connection" at error level for
// every connection of every group on each shutdown; io.EOF is what
// NetworkTransport treats as a quiet end of stream. A conn killed by the dial
// filter reports the filter's error instead, which says why.
func (c *muxConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		if cause := c.cause.Load(); cause != nil {
			return n, *cause
		}
		if c.layer.isClosed() {
			return n, io.EOF
		}
	}
	return n, err
}

func (c *muxConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		if cause := c.cause.Load(); cause != nil {
			return n, *cause
		}
	}
	return n, err
}

func (c *muxConn) Close() error {
	c.layer.untrack(c)
	return c.Conn.Close()
}

func (c *muxConn) kill(cause error) {
	c.cause.Store(&cause)
	_ = c.Close()
}

// muxAddr is the advertised address as a net.Addr.
type muxAddr string

func (a muxAddr) Network() string { return "tcp" }
func (a muxAddr) String() string  { return string(a) }

func groupLabel(group uint32) string {
	if group == ControlGroup {
		return "control"
	}
	return fmt.Sprint(group)
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
