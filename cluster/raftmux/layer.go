package raftmux

// A group's raft.StreamLayer over the mux: accepted connections come from the
// mux's accept loop; dialed ones carry the group's header.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

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
