package raftmux

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/internal/testkit"
)

func listenBeatMux(t *testing.T, linger time.Duration, lw *muxTestLog) *Mux {
	t.Helper()
	m, err := Listen(Config{BindAddr: "127.0.0.1:0", Secret: testMuxSecret, Logger: lw.slog(), HandshakeTimeout: time.Second, HeartbeatLinger: linger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// beatPair registers groups on a and b and installs on b's side a heartbeat
// handler that answers with the request's term plus one, so a test can tell
// whose answer came back.
func beatPair(t *testing.T, a, b *Mux, groups ...uint32) (from []*GroupTransport, handled func(g uint32) int) {
	t.Helper()
	var mu sync.Mutex
	count := map[uint32]int{}
	for _, g := range groups {
		ta, err := a.Transport(g)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := b.Transport(g)
		if err != nil {
			t.Fatal(err)
		}
		tb.SetHeartbeatHandler(func(rpc raft.RPC) {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			mu.Lock()
			count[g]++
			mu.Unlock()
			rpc.Respond(&raft.AppendEntriesResponse{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("b"), Addr: []byte(b.Addr())},
				Term:      req.Term + 1, LastLog: uint64(g) * 10, Success: true, NoRetryBackoff: g%2 == 0,
			}, nil)
		})
		from = append(from, ta)
	}
	return from, func(g uint32) int { mu.Lock(); defer mu.Unlock(); return count[g] }
}

func heartbeatReq(a *Mux, term uint64) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("a"), Addr: []byte(a.Addr())},
		Term:      term,
	}
}

// Heartbeats of many groups to one peer wait for each other and travel as one
// frame; each answer reaches its own caller intact, and a hurried group's
// heartbeat does not wait.
func TestHeartbeatsOfAllGroupsTravelTogether(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	const linger = 700 * time.Millisecond
	a, b := listenBeatMux(t, linger, lw), listenBeatMux(t, linger, lw)
	groups := []uint32{1, 2, 3, 4, 5, 6, 7, 8}
	from, handled := beatPair(t, a, b, groups...)

	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(from))
	resps := make([]raft.AppendEntriesResponse, len(from))
	for i, tr := range from {
		wg.Go(func() {
			errs[i] = tr.AppendEntries("b", b.Addr(), heartbeatReq(a, uint64(100+i)), &resps[i])
		})
	}
	wg.Wait()
	if took := time.Since(start); took < linger {
		t.Errorf("heartbeats answered after %v, before the %v linger: they did not wait for company", took, linger)
	}
	for i, g := range groups {
		if errs[i] != nil {
			t.Fatalf("group %d: %v", g, errs[i])
		}
		want := raft.AppendEntriesResponse{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("b"), Addr: []byte(b.Addr())},
			Term:      uint64(101 + i), LastLog: uint64(g) * 10, Success: true, NoRetryBackoff: g%2 == 0,
		}
		if !reflect.DeepEqual(resps[i], want) {
			t.Errorf("group %d got %+v, want %+v", g, resps[i], want)
		}
		if n := handled(g); n != 1 {
			t.Errorf("group %d's handler ran %d times, want 1", g, n)
		}
	}
	if f, c := a.beats.frames.Load(), a.beats.carried.Load(); f != 1 || c != int64(len(groups)) {
		t.Errorf("%d heartbeats went in %d frames, want %d in 1", c, f, len(groups))
	}

	// A hurried group skips the linger (a linearizable read waits for it).
	from[0].Hurry()
	start = time.Now()
	var resp raft.AppendEntriesResponse
	if err := from[0].AppendEntries("b", b.Addr(), heartbeatReq(a, 7), &resp); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > linger/2 {
		t.Errorf("a hurried heartbeat took %v; the linger is %v", took, linger)
	}
	if resp.Term != 8 {
		t.Errorf("hurried heartbeat answered with term %d, want 8", resp.Term)
	}
}

// A peer that closes the link unanswered (a node of an older version during a
// rolling upgrade) still gets heartbeats: each group's own connection carries
// them, and the link is not tried again for a while.
func TestHeartbeatsToAPeerWithoutLinksGoPerGroup(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	a, b := listenBeatMux(t, 10*time.Millisecond, lw), listenBeatMux(t, 10*time.Millisecond, lw)
	b.beats.refuse = true
	from, handled := beatPair(t, a, b, 3)

	for i := range 3 {
		var resp raft.AppendEntriesResponse
		if err := from[0].AppendEntries("b", b.Addr(), heartbeatReq(a, 5), &resp); err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
		if resp.Term != 6 || resp.LastLog != 30 {
			t.Fatalf("heartbeat %d answered %+v", i, resp)
		}
	}
	if n := handled(3); n != 3 {
		t.Errorf("the handler ran %d times, want 3", n)
	}
	// At most the one frame that found the peer refusing links (none when
	// the refusal came before the frame was counted sent).
	if f := a.beats.frames.Load(); f > 1 {
		t.Errorf("%d frames sent; want at most the one that found the peer refusing links", f)
	}
	l := a.beats.link(string(b.Addr()))
	l.mu.Lock()
	until := l.legacyUntil
	l.mu.Unlock()
	if time.Until(until) < beatLegacyFor/2 {
		t.Errorf("the refusing peer is not remembered (until %v)", until)
	}
}

// A heartbeat for a group the peer does not host is an error for that group
// alone; the others in the frame are answered.
func TestHeartbeatForAGroupNotHostedFailsAlone(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	a, b := listenBeatMux(t, 200*time.Millisecond, lw), listenBeatMux(t, 200*time.Millisecond, lw)
	from, _ := beatPair(t, a, b, 1)
	lonely, err := a.Transport(9) // b hosts no group 9
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var errOK, errLonely error
	wg.Go(func() {
		var resp raft.AppendEntriesResponse
		errOK = from[0].AppendEntries("b", b.Addr(), heartbeatReq(a, 1), &resp)
	})
	wg.Go(func() {
		var resp raft.AppendEntriesResponse
		errLonely = lonely.AppendEntries("b", b.Addr(), heartbeatReq(a, 1), &resp)
	})
	wg.Wait()
	if errOK != nil {
		t.Errorf("hosted group: %v", errOK)
	}
	if errLonely == nil || !bytes.Contains([]byte(errLonely.Error()), []byte("not hosted")) {
		t.Errorf("group not hosted: got %v", errLonely)
	}
	if f := a.beats.frames.Load(); f != 1 {
		t.Errorf("%d frames, want 1", f)
	}
}

// Closing a mux fails the heartbeats waiting on it instead of leaving Raft's
// heartbeat goroutines hanging, and leaks nothing.
func TestHeartbeatsWaitingWhenTheMuxClosesFail(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	a, b := listenBeatMux(t, time.Hour, lw), listenBeatMux(t, time.Hour, lw)
	from, _ := beatPair(t, a, b, 1)
	done := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		done <- from[0].AppendEntries("b", b.Addr(), heartbeatReq(a, 1), &resp)
	}()
	testkit.Eventually(t, 5*time.Second, "the heartbeat queued, lingering", func() (bool, string) {
		a.beats.mu.Lock()
		l := a.beats.links[string(b.Addr())]
		a.beats.mu.Unlock()
		if l == nil {
			return false, "no link to b"
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.pending) == 1, fmt.Sprintf("%d queued", len(l.pending))
	})
	_ = a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("got %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the heartbeat still waits after the mux closed")
	}
}

// Raft groups over the mux keep their leaders with heartbeats coalesced, and
// the heartbeats do travel together.
func TestRaftGroupsStayStableOnCoalescedHeartbeats(t *testing.T) {
	muxLeakCheck(t)
	groups := make([]uint32, 16)
	for i := range groups {
		groups[i] = uint32(i)
	}
	// A window of 2 s must keep every leader. A starved test process (make
	// test runs process clusters beside it on 2 cores, under -race) missed
	// 200 ms heartbeat timeouts in every window in CI: the groups get 500 ms,
	// and up to three windows are watched; heartbeats that coalescing
	// delayed by a timeout or lost would still fail every one.
	const timeout = 500 * time.Millisecond
	c := newMuxTestClusterTimeout(t, groups, timeout)
	var lost []string
	for window := 0; window < 3; window++ {
		terms := map[uint32]uint64{}
		c.forGroups(func(g uint32) { terms[g] = c.leader(g).replicas[g].r.CurrentTerm() })
		var f0, c0 int64
		for _, n := range c.nodes {
			f0 += n.mux.beats.frames.Load()
			c0 += n.mux.beats.carried.Load()
		}
		time.Sleep(2 * time.Second) // the window watched: a duration, not a wait for a state
		var f1, c1 int64
		for _, n := range c.nodes {
			f1 += n.mux.beats.frames.Load()
			c1 += n.mux.beats.carried.Load()
		}
		frames, carried := f1-f0, c1-c0
		t.Logf("2 s: %d heartbeats in %d frames", carried, frames)
		// hashicorp/raft beats every timeout/10 to 2*timeout/10 per follower;
		// a fifth of the fewest that gives is the floor (starvation delays).
		if least := int64(len(groups)) * 2 * int64(2*time.Second/(2*timeout/10)); carried < least/5 {
			t.Errorf("only %d heartbeats went over links in 2 s", carried)
		}
		// One heartbeat per frame (1.0) is no coalescing; at a 500 ms
		// timeout they travel about 2.2 to a frame (4 at 200 ms).
		if 2*carried < 3*frames {
			t.Errorf("%d heartbeats in %d frames: they do not travel together", carried, frames)
		}
		lost = lost[:0]
		c.forGroups(func(g uint32) {
			if got := c.leader(g).replicas[g].r.CurrentTerm(); got != terms[g] {
				lost = append(lost, fmt.Sprintf("group %d changed term %d -> %d", g, terms[g], got))
			}
		})
		if len(lost) == 0 || t.Failed() {
			break
		}
		t.Logf("window %d lost leaders: %v", window+1, lost)
	}
	if len(lost) > 0 {
		t.Errorf("a leader was lost in every window: %v", lost)
	}
	c.apply(3, muxVals(3, 0, 20))
	c.converged(3, muxVals(3, 0, 20), c.nodes)
}

func TestBeatFrameCodec(t *testing.T) {
	tr := &GroupTransport{group: 77}
	var frame []byte
	calls := []*beatCall{
		{t: tr, seq: 1, req: &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("n1"), Addr: []byte("127.0.0.1:1")}, Term: 1 << 40}},
		{t: tr, seq: 1 << 50, req: &raft.AppendEntriesRequest{Term: 2, RPCHeader: raft.RPCHeader{Addr: []byte("a")}}},
	}
	for _, c := range calls {
		frame = appendBeatRequest(frame, c)
	}
	rest := frame
	for i, c := range calls {
		var req raft.AppendEntriesRequest
		var seq, group uint64
		var err error
		if rest, seq, group, err = decodeBeatRequest(rest, &req); err != nil {
			t.Fatal(err)
		}
		if seq != c.seq || group != 77 || !reflect.DeepEqual(&req, c.req) {
			t.Errorf("request %d: got seq %d group %d %+v, want %d 77 %+v", i, seq, group, req, c.seq, *c.req)
		}
	}
	if len(rest) != 0 {
		t.Errorf("%d bytes left over", len(rest))
	}
	// Every truncation of an item is an error, never a panic or a value.
	first := appendBeatRequest(nil, calls[0])
	for n := range len(first) {
		var req raft.AppendEntriesRequest
		if _, _, _, err := decodeBeatRequest(first[:n], &req); err == nil {
			t.Errorf("truncated at %d of %d bytes: no error", n, len(first))
		}
	}

	resp := &raft.AppendEntriesResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: 2, ID: []byte("b")}, Term: 9, LastLog: 1 << 33, NoRetryBackoff: true}
	out := appendBeatResponse(nil, 5, resp, nil)
	out = appendBeatResponse(out, 6, nil, fmt.Errorf("group 4 is not hosted here"))
	var got []string
	err := decodeBeatResponses(out, func(seq uint64, r *raft.AppendEntriesResponse, err error) {
		if err != nil {
			got = append(got, fmt.Sprintf("%d %v", seq, err))
			return
		}
		if !reflect.DeepEqual(r, resp) {
			t.Errorf("response %+v, want %+v", *r, *resp)
		}
		got = append(got, fmt.Sprint(seq))
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"5", "6 cluster: raft mux: peer: group 4 is not hosted here"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := decodeBeatResponses(out[:len(out)-1], func(uint64, *raft.AppendEntriesResponse, error) {}); err == nil {
		t.Error("a truncated response frame decoded")
	}
	if err := decodeBeatResponses([]byte{1, 9}, func(uint64, *raft.AppendEntriesResponse, error) {}); err == nil {
		t.Error("an unknown status decoded")
	}
}

func FuzzBeatFrames(f *testing.F) {
	f.Add(appendBeatRequest(nil, &beatCall{t: &GroupTransport{group: 1}, seq: 3, req: &raft.AppendEntriesRequest{Term: 4, RPCHeader: raft.RPCHeader{Addr: []byte("a")}}}))
	f.Add(appendBeatResponse(nil, 1, &raft.AppendEntriesResponse{Term: 1, Success: true}, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		for rest := b; len(rest) > 0; {
			var req raft.AppendEntriesRequest
			var err error
			if rest, _, _, err = decodeBeatRequest(rest, &req); err != nil {
				break
			}
		}
		_ = decodeBeatResponses(b, func(uint64, *raft.AppendEntriesResponse, error) {})
	})
}
