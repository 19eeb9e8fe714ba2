package raftmux

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/internal/testcerts"
	"github.com/rhizon/rhizon/internal/testkit"
)

// muxLayerOf registers a bare layer (no NetworkTransport) so a test can see
// exactly which connections reach a group.
func muxLayerOf(t *testing.T, m *Mux, g uint32) *muxLayer {
	t.Helper()
	l, err := m.register(g)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func muxHeader(magic0, magic1, version byte, g uint32) []byte {
	h := []byte{magic0, magic1, version, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[3:], g)
	return h
}

// expectClosedByPeer fails unless the other end closes c within d.
func expectClosedByPeer(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("connection still open after %v", d)
	default:
		t.Fatalf("read: %v, want the peer to close", err)
	}
}

// expectAccepted fails unless l yields a conn within d and returns it.
func expectAccepted(t *testing.T, l *muxLayer, d time.Duration) net.Conn {
	t.Helper()
	select {
	case c := <-l.acceptCh:
		return c
	case <-time.After(d):
		t.Fatal("no connection reached the group")
		return nil
	}
}

func expectNothingAccepted(t *testing.T, l *muxLayer) {
	t.Helper()
	select {
	case c := <-l.acceptCh:
		t.Fatalf("connection from %s reached the group", c.RemoteAddr())
	default:
	}
}

// dialAndPing dials srv's group through out, takes the connection from in
// and checks that bytes written right after the handshake arrive whole (the
// handshake must not eat them). Both ends are closed at the end of the test.
func dialAndPing(t *testing.T, out *muxLayer, srv *Mux, in *muxLayer) (client, server net.Conn) {
	t.Helper()
	c, err := out.Dial(srv.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	sc := expectAccepted(t, in, 2*time.Second)
	t.Cleanup(func() { _ = sc.Close() })
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	return c, sc
}

func TestMuxHandshake(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	srv := listenTestMux(t, "127.0.0.1:0", lw)
	cli := listenTestMux(t, "127.0.0.1:0", lw)
	const g = 7
	in := muxLayerOf(t, srv, g)
	out := muxLayerOf(t, cli, g)

	dialRaw := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", string(srv.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	t.Run("routes to the group and passes bytes through", func(t *testing.T) {
		c, sc := dialAndPing(t, out, srv, in)
		if sc.(*muxConn).dialed || !c.(*muxConn).dialed {
			t.Fatal("conn roles mixed up")
		}
	})
	t.Run("bad magic is closed", func(t *testing.T) {
		c := dialRaw(t)
		if _, err := c.Write(muxHeader('G', 'E', muxVersion, g)); err != nil {
			t.Fatal(err)
		}
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("bad version is closed", func(t *testing.T) {
		c := dialRaw(t)
		if _, err := c.Write(muxHeader(muxMagic0, muxMagic1, 9, g)); err != nil {
			t.Fatal(err)
		}
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("unknown group is closed", func(t *testing.T) {
		c, err := out.m.dialMux(context.Background(), string(srv.Addr()), 99, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("an unauthenticated version 1 header is closed", func(t *testing.T) {
		c := dialRaw(t)
		if _, err := c.Write(muxHeader(muxMagic0, muxMagic1, 1, g)); err != nil {
			t.Fatal(err)
		}
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("a wrong answer to the challenge is closed", func(t *testing.T) {
		c := dialRaw(t)
		hdr := muxHeader(muxMagic0, muxMagic1, muxVersion, g)
		if _, err := c.Write(append(hdr, make([]byte, muxNonceSize)...)); err != nil {
			t.Fatal(err)
		}
		reply := make([]byte, muxNonceSize+muxMACSize)
		if _, err := io.ReadFull(c, reply); err != nil {
			t.Fatal(err)
		}
		// The answer computed with another secret.
		bad := muxMAC(muxKey("not-the-secret"), 'D', hdr, make([]byte, muxNonceSize), reply[:muxNonceSize])
		if _, err := c.Write(append(bad, "raft bytes"...)); err != nil {
			t.Fatal(err)
		}
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("a mux with another secret can neither dial nor be dialed", func(t *testing.T) {
		other, err := Listen(Config{BindAddr: "127.0.0.1:0", Secret: "not-the-secret", HandshakeTimeout: 500 * time.Millisecond, Logger: lw.slog()})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if c, err := other.dialMux(context.Background(), string(srv.Addr()), g, time.Second); err == nil {
			c.Close()
			t.Fatal("a mux with another secret connected")
		} else if !errors.Is(err, errMuxAuth) {
			t.Fatalf("dial with another secret: %v, want %v", err, errMuxAuth)
		}
		expectNothingAccepted(t, in)
		if c, err := out.m.dialMux(context.Background(), string(other.Addr()), g, time.Second); err == nil {
			c.Close()
			t.Fatal("connected to a mux with another secret")
		}
	})
	t.Run("silent conn times out without blocking others", func(t *testing.T) {
		began := time.Now()
		silent := dialRaw(t)
		half := dialRaw(t)
		if _, err := half.Write([]byte{muxMagic0, muxMagic1}); err != nil {
			t.Fatal(err)
		}
		// Meanwhile a proper connection goes straight through.
		c, err := out.Dial(srv.Addr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc := expectAccepted(t, in, 300*time.Millisecond)
		sc.Close()
		expectClosedByPeer(t, silent, 3*time.Second)
		expectClosedByPeer(t, half, 3*time.Second)
		if d := time.Since(began); d < 400*time.Millisecond {
			t.Fatalf("closed after %v, before the 500ms handshake timeout", d)
		}
	})
	t.Run("full backlog drops the excess", func(t *testing.T) {
		const full = 9
		slow := muxLayerOf(t, srv, full) // nobody calls Accept
		var conns []net.Conn
		for range muxAcceptBacklog + 1 {
			c, err := out.m.registeredLayerDial(full, srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
		// One of them cannot be delivered and is closed after the
		// handshake timeout; the backlog holds the rest.
		testkit.Poll{Timeout: 3 * time.Second, Every: 10 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
			if n := len(slow.acceptCh); n != muxAcceptBacklog {
				return fmt.Errorf("backlog %d", n)
			}
			return nil
		})
		// Past the handshake timeout exactly one conn is closed by the
		// server; a short read deadline tells open (timeout) from closed.
		closed := 0
		testkit.Poll{Timeout: 3 * time.Second, Every: 50 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
			closed = 0
			for _, c := range conns {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
				var b [1]byte
				if _, err := c.Read(b[:]); err != nil && !isTimeout(err) {
					closed++
				}
			}
			if closed == 0 {
				return errors.New("no conn closed yet")
			}
			return nil
		})
		if closed != 1 {
			t.Fatalf("%d conns closed, want 1", closed)
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// registeredLayerDial dials group g of addr through a throwaway layer of m
// (the dialer's own registration of g is irrelevant to the peer).
func (m *Mux) registeredLayerDial(g uint32, addr raft.ServerAddress) (net.Conn, error) {
	l := &muxLayer{m: m, group: g, done: make(chan struct{}), ctx: m.ctx, cancel: func() {}, conns: map[*muxConn]struct{}{}}
	return l.Dial(addr, time.Second)
}

// muxRPC sends a RequestVote from a to b's transport of group g and answers
// it on b's side; it reports the RPC's error.
func muxRPC(a, b *GroupTransport) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case rpc := <-b.Consumer():
			rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil)
		case <-done:
		}
	}()
	var resp raft.RequestVoteResponse
	err := a.RequestVote("b", b.LocalAddr(), &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{Addr: []byte(a.LocalAddr())}, Term: 1}, &resp)
	if err == nil && !resp.Granted {
		err = errors.New("vote not granted")
	}
	return err
}

// During a rolling upgrade (AcceptUnauthenticated) a mux takes the version 1
// header of an older node and, after an older node closed on version 2,
// dials it with version 1; without the option it does neither.
func TestMuxUnauthenticatedPeersOnlyWhenAllowed(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	const g = 5
	m, err := Listen(Config{BindAddr: "127.0.0.1:0", Secret: testMuxSecret, AcceptUnauthenticated: true,
		HandshakeTimeout: 500 * time.Millisecond, Logger: lw.slog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	in := muxLayerOf(t, m, g)
	c, err := net.Dial("tcp", string(m.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(muxHeader(muxMagic0, muxMagic1, muxVersionUnauthenticated, g)); err != nil {
		t.Fatal(err)
	}
	expectAccepted(t, in, 2*time.Second).Close()

	// An older node's acceptor: it reads the header and keeps only
	// version 1 connections.
	old, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	versions := make(chan byte, 4)
	kept := make(chan net.Conn, 4)
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = old.Close()
		<-done
		for len(kept) > 0 {
			_ = (<-kept).Close()
		}
	})
	go func() {
		defer close(done)
		for {
			oc, err := old.Accept()
			if err != nil {
				return
			}
			hdr := make([]byte, muxHeaderSize)
			if _, err := io.ReadFull(oc, hdr); err == nil {
				versions <- hdr[2]
			}
			if hdr[2] != muxVersionUnauthenticated {
				_ = oc.Close()
				continue
			}
			kept <- oc
		}
	}()
	strict := listenTestMux(t, "127.0.0.1:0", lw)
	if _, err := strict.dialMux(context.Background(), old.Addr().String(), g, time.Second); err == nil {
		t.Fatal("a mux without the option connected to an older node")
	}
	if _, err := strict.dialMux(context.Background(), old.Addr().String(), g, time.Second); err == nil {
		t.Fatal("a mux without the option fell back to version 1")
	}
	if _, err := m.dialMux(context.Background(), old.Addr().String(), g, time.Second); !errors.Is(err, errMuxNoChallenge) {
		t.Fatalf("first dial of an older node: %v, want %v", err, errMuxNoChallenge)
	}
	oc, err := m.dialMux(context.Background(), old.Addr().String(), g, time.Second)
	if err != nil {
		t.Fatalf("second dial, in version 1: %v", err)
	}
	defer oc.Close()
	var got []byte
	for range 4 {
		got = append(got, <-versions)
	}
	if want := []byte{muxVersion, muxVersion, muxVersion, muxVersionUnauthenticated}; !bytes.Equal(got, want) {
		t.Fatalf("header versions the older node saw: %v, want %v", got, want)
	}
}

// With TLS, the mux's connections are TLS from their first byte: Raft bytes
// pass between two TLS muxes; a plaintext header, a mux without TLS and a
// mux that does not trust the peer's CA are refused.
func TestMuxTLS(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	certs := testcerts.Write(t)
	listen := func(cfg *tls.Config) *Mux {
		m, err := Listen(Config{BindAddr: "127.0.0.1:0", Secret: testMuxSecret, TLS: cfg,
			HandshakeTimeout: 500 * time.Millisecond, Logger: lw.slog()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	const g = 3
	srv := listen(testcerts.Config(t, certs, certs.CA))
	in := muxLayerOf(t, srv, g)
	cli := listen(testcerts.Config(t, certs, certs.CA))
	out := muxLayerOf(t, cli, g)

	_, sc := dialAndPing(t, out, srv, in)
	if _, ok := sc.(*muxConn).Conn.(*tls.Conn); !ok {
		t.Fatalf("accepted conn is %T, not TLS", sc.(*muxConn).Conn)
	}

	raw, err := net.Dial("tcp", string(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(append(muxHeader(muxMagic0, muxMagic1, muxVersion, g), make([]byte, muxNonceSize)...)); err != nil {
		t.Fatal(err)
	}
	expectClosedByPeer(t, raw, 2*time.Second)
	expectNothingAccepted(t, in)

	plain := listenTestMux(t, "127.0.0.1:0", lw)
	if pc, err := plain.dialMux(context.Background(), string(srv.Addr()), g, time.Second); err == nil {
		pc.Close()
		t.Fatal("a mux without TLS connected to a TLS mux")
	}
	untrusting := listen(testcerts.Config(t, certs, certs.OtherCA))
	if uc, err := untrusting.dialMux(context.Background(), string(srv.Addr()), g, time.Second); err == nil {
		uc.Close()
		t.Fatal("a mux connected to a peer whose certificate its CA did not sign")
	}
	expectNothingAccepted(t, in)
}

// Idle connections that never send a header cannot keep a peer out: when
// every handshake slot is taken, the oldest pending one gives way.
func TestMuxIdleConnectionsDoNotBlockPeers(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	srv, err := Listen(Config{BindAddr: "127.0.0.1:0", Secret: testMuxSecret, Logger: lw.slog(),
		HandshakeTimeout: time.Minute, MaxPendingHandshakes: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	cli := listenTestMux(t, "127.0.0.1:0", lw)
	const g = 7
	in := muxLayerOf(t, srv, g)
	out := muxLayerOf(t, cli, g)
	for range 32 {
		c, err := net.Dial("tcp", string(srv.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	testkit.Poll{Timeout: 5 * time.Second, Every: 10 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		// One host holds at most a quarter of the slots: 2 of 8.
		if n, ev := len(srv.pending), srv.evicted.Load(); n < 2 || ev < 30 {
			return fmt.Errorf("%d pending handshakes, %d evicted; want 2 pending and 30 evicted", n, ev)
		}
		return nil
	})
	// Dials with a one-second timeout: it fails if the slots stay taken.
	dialAndPing(t, out, srv, in)
}
