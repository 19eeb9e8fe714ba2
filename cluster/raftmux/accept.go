package raftmux

// The accept side of the mux: bounded pending handshakes, the header and
// authentication, then the connection goes to its group (or its beat link).

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

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
