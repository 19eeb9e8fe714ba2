package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rhizon/rhizon/internal/testkit"
)

// membershipLeakCheck fails the test if goroutines started during it are
// still running after its cleanups (registered later, so run earlier) have
// shut everything down. memberlist does not wait for its own goroutines on
// Shutdown (and its timers may fire just after), so allow them a few seconds.
func membershipLeakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		testkit.Poll{Timeout: 5 * time.Second, Every: 50 * time.Millisecond}.EventuallyNil(t, "condition", func() error { return goleak.Find(opt) })
	})
}

// testSlog logs through t.Logf until the test's cleanups run; memberlist may
// log from its goroutines after that, which t.Logf would turn into a panic.
func testSlog(t *testing.T) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testLogWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testNodeMeta(id string) NodeMeta {
	return NodeMeta{
		ID: id, RaftAddr: "127.0.0.1:7100", GRPCAddr: "127.0.0.1:7200", HTTPAddr: "127.0.0.1:7300",
		NATSAddr: "127.0.0.1:7400", Zone: "zone-" + id,
		Actors: map[string]string{"counter": "v1", "cart-" + id: "v2"},
	}
}

func startMembership(t *testing.T, meta NodeMeta) *Membership {
	t.Helper()
	m, err := New(Config{
		Meta: meta, BindAddr: "127.0.0.1:0", Fast: true,
		Logger: testSlog(t).With("node", meta.ID),
	})
	if err != nil {
		t.Fatalf("New(%s): %v", meta.ID, err)
	}
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Errorf("shutdown %s: %v", meta.ID, err)
		}
	})
	return m
}

// startMembers starts one membership per id, joins the rest to the first and
// waits until every node sees every node alive with its meta.
func startMembers(t *testing.T, ids ...string) []*Membership {
	t.Helper()
	ms := make([]*Membership, len(ids))
	for i, id := range ids {
		ms[i] = startMembership(t, testNodeMeta(id))
		if i > 0 {
			n, err := ms[i].Join([]string{ms[0].Addr()})
			if err != nil || n != 1 {
				t.Fatalf("%s join %s = %d, %v", id, ms[0].Addr(), n, err)
			}
		}
	}
	testkit.Poll{Timeout: 5 * time.Second, Every: 10 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		for _, m := range ms {
			if err := checkAllAlive(m, ms); err != nil {
				return err
			}
		}
		return nil
	})
	return ms
}

// checkAllAlive reports whether observer sees exactly nodes, alive, with the
// meta and gossip address each node was started with.
func checkAllAlive(observer *Membership, nodes []*Membership) error {
	got := observer.Members()
	if len(got) != len(nodes) {
		return fmt.Errorf("%s sees %d members, want %d: %v", observer.id, len(got), len(nodes), got)
	}
	for i, n := range nodes { // nodes are in ID order, as Members() is
		g := got[i]
		if g.State != MemberAlive {
			return fmt.Errorf("%s sees %s %s", observer.id, g.Meta.ID, g.State)
		}
		want := n.Members()
		self, _ := findMember(want, n.id)
		if !reflect.DeepEqual(g.Meta, self.Meta) {
			return fmt.Errorf("%s sees meta %+v for %s, want %+v", observer.id, g.Meta, n.id, self.Meta)
		}
		if g.Addr != n.Addr() {
			return fmt.Errorf("%s sees addr %s for %s, want %s", observer.id, g.Addr, n.id, n.Addr())
		}
	}
	return nil
}

func findMember(ms []Member, id string) (Member, bool) {
	for _, m := range ms {
		if m.Meta.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

func stateOf(m *Membership, id string) MemberState {
	mem, ok := findMember(m.Members(), id)
	if !ok {
		return 0
	}
	return mem.State
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func fired(ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	default:
		return errors.New("Changes() did not fire")
	}
}

func TestMembership_ThreeNodesJoinSeeMetaAndUpdates(t *testing.T) {
	membershipLeakCheck(t)
	a := startMembership(t, testNodeMeta("a"))
	if _, port, _ := net.SplitHostPort(a.Addr()); port == "0" || port == "" {
		t.Fatalf("Addr() = %q, want the resolved port", a.Addr())
	}
	self := a.Members()
	if len(self) != 1 || self[0].State != MemberAlive || !reflect.DeepEqual(self[0].Meta, testNodeMeta("a")) {
		t.Fatalf("alone, a sees %+v", self)
	}
	drain(a.Changes())

	ms := startMembers(t, "b", "c") // b, c join each other...
	if _, err := ms[0].Join([]string{a.Addr()}); err != nil {
		t.Fatal(err) // ...then a: gossip must spread a to c and c to a
	}
	all := []*Membership{a, ms[0], ms[1]}
	testkit.Poll{Timeout: 5 * time.Second, Every: 10 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		for _, m := range all {
			if err := checkAllAlive(m, all); err != nil {
				return err
			}
		}
		return nil
	})
	if err := fired(a.Changes()); err != nil {
		t.Fatalf("after joins: %v", err)
	}

	// A meta update (draining, new actor version) reaches everyone.
	c := ms[1]
	drain(a.Changes())
	meta := testNodeMeta("c")
	meta.Draining = true
	meta.Actors["counter"] = "v2"
	if err := c.UpdateMeta(meta); err != nil {
		t.Fatal(err)
	}
	testkit.Poll{Timeout: 5 * time.Second, Every: 10 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		for _, m := range all {
			got, _ := findMember(m.Members(), "c")
			if !reflect.DeepEqual(got.Meta, meta) || got.State != MemberAlive {
				return fmt.Errorf("%s sees c as %s %+v", m.id, got.State, got.Meta)
			}
		}
		return nil
	})
	if err := fired(a.Changes()); err != nil {
		t.Fatalf("after UpdateMeta: %v", err)
	}
	// Members() hands out copies: mutating one must not change the table.
	got, _ := findMember(a.Members(), "c")
	got.Meta.Actors["counter"] = "mutated"
	if again, _ := findMember(a.Members(), "c"); again.Meta.Actors["counter"] != "v2" {
		t.Fatalf("Members() shares its maps with the caller")
	}
}

func TestMembership_LeaveIsSeenAsLeftNotDead(t *testing.T) {
	membershipLeakCheck(t)
	ms := startMembers(t, "a", "b", "c")
	a, b, c := ms[0], ms[1], ms[2]
	drain(a.Changes())

	if err := c.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(c, "c"); st != MemberLeft {
		t.Fatalf("c sees itself %s after Leave", st)
	}
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}

	sawDead := map[string]bool{}
	testkit.Poll{Timeout: 5 * time.Second, Every: 5 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		for _, m := range []*Membership{a, b} {
			switch st := stateOf(m, "c"); st {
			case MemberLeft:
			case MemberDead:
				sawDead[m.id] = true
				return fmt.Errorf("%s sees c dead", m.id)
			default:
				return fmt.Errorf("%s sees c %s", m.id, st)
			}
		}
		return nil
	})
	if len(sawDead) > 0 {
		t.Errorf("a graceful leave was seen as a death by %v before turning into left", sawDead)
	}
	if err := fired(a.Changes()); err != nil {
		t.Fatalf("after leave: %v", err)
	}
	if st := stateOf(a, "b"); st != MemberAlive {
		t.Fatalf("a sees b %s", st)
	}
}

func TestMembership_ShutdownWithoutLeaveGoesSuspectThenDead(t *testing.T) {
	membershipLeakCheck(t)
	ms := startMembers(t, "a", "b", "c")
	a, b, c := ms[0], ms[1], ms[2]
	drain(a.Changes())

	start := time.Now()
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	var suspectAt, deadAt time.Duration
	testkit.Poll{Timeout: 15 * time.Second, Every: 5 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		switch st := stateOf(a, "c"); st {
		case MemberSuspect:
			if suspectAt == 0 {
				suspectAt = time.Since(start)
			}
		case MemberDead:
			deadAt = time.Since(start)
			return nil
		case MemberLeft:
			t.Fatalf("a killed node was seen as having left")
		}
		return errors.New("a does not see c dead yet")
	})
	t.Logf("a saw c suspect after %v, dead after %v", suspectAt, deadAt)
	if suspectAt == 0 {
		t.Errorf("c went dead without a first seeing it suspect")
	}
	testkit.Poll{Timeout: 15 * time.Second, Every: 10 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		if st := stateOf(b, "c"); st != MemberDead {
			return fmt.Errorf("b sees c %s", st)
		}
		return nil
	})
	t.Logf("b saw c dead after %v", time.Since(start))
	if err := fired(a.Changes()); err != nil {
		t.Fatalf("after death: %v", err)
	}
	if dead, _ := findMember(a.Members(), "c"); dead.Since.Before(start) {
		t.Errorf("c's Since = %v, before it was shut down at %v", dead.Since, start)
	}

	// Forget drops the dead member only; live members and self stay.
	drain(a.Changes())
	a.Forget("b")
	a.Forget("a")
	a.Forget("c")
	got := a.Members()
	if len(got) != 2 || got[0].Meta.ID != "a" || got[1].Meta.ID != "b" {
		t.Fatalf("after Forget(c), a sees %+v", got)
	}
	if err := fired(a.Changes()); err != nil {
		t.Fatalf("after Forget: %v", err)
	}
}

func TestMembership_MetaSizeLimit(t *testing.T) {
	membershipLeakCheck(t)
	// Grow Zone until the encoding is exactly memberlist's limit: that must
	// be accepted (and gossip without memberlist panicking); one more byte
	// must be rejected by New and UpdateMeta with a clear error.
	meta := testNodeMeta("a")
	enc, err := encodeNodeMeta(meta)
	if err != nil {
		t.Fatal(err)
	}
	meta.Zone += strings.Repeat("z", 512-len(enc))
	if enc, err := encodeNodeMeta(meta); err != nil || len(enc) != 512 {
		t.Fatalf("encoded %d bytes, %v", len(enc), err)
	}
	over := meta
	over.Zone += "z"

	_, err = New(Config{Meta: over, BindAddr: "127.0.0.1:0", Fast: true, Logger: testSlog(t)})
	if !errors.Is(err, ErrMetaTooLarge) || !strings.Contains(err.Error(), "513 bytes") || !strings.Contains(err.Error(), "512") {
		t.Fatalf("New with 513-byte meta: %v", err)
	}

	a := startMembership(t, meta)
	b := startMembership(t, testNodeMeta("b"))
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	testkit.Poll{Timeout: 5 * time.Second, Every: 10 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		return checkAllAlive(b, []*Membership{a, b})
	})

	if err := b.UpdateMeta(NodeMeta{Actors: manyActors(40)}); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("UpdateMeta with 40 actor types: %v", err)
	}
	if got, _ := findMember(b.Members(), "b"); !reflect.DeepEqual(got.Meta, testNodeMeta("b")) {
		t.Fatalf("rejected UpdateMeta changed b's meta to %+v", got.Meta)
	}
	if err := b.UpdateMeta(NodeMeta{ID: "someone-else"}); err == nil {
		t.Fatalf("UpdateMeta accepted a different node id")
	}
}

func manyActors(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("actor-type-%02d", i)] = "v1.2.3"
	}
	return m
}

func TestMembership_NodeMetaRoundTrip(t *testing.T) {
	for _, meta := range []NodeMeta{
		testNodeMeta("x"),
		{ID: "minimal"},
		{ID: "draining", Draining: true, Actors: map[string]string{}},
	} {
		enc, err := encodeNodeMeta(meta)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeNodeMeta(meta.ID, enc)
		if want := normalizeNodeMeta(meta); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip of %+v (%s) = %+v, %v", meta, enc, got, err)
		}
	}
	if _, err := decodeNodeMeta("junk", []byte("not json")); err == nil {
		t.Fatal("decoded junk meta without error")
	}
	// The whole point of the short keys: a typical node leaves room for a
	// useful number of actor types.
	meta := testNodeMeta("node-1")
	meta.Actors = manyActors(10)
	if enc, err := encodeNodeMeta(meta); err != nil {
		t.Fatalf("10 actor types do not fit: %v", err)
	} else {
		t.Logf("typical meta with 10 actor types: %d bytes", len(enc))
	}
}

func TestMembership_ConfigErrorsAndClosedCalls(t *testing.T) {
	membershipLeakCheck(t)
	for _, cfg := range []Config{
		{BindAddr: "127.0.0.1:0"},                                                   // no ID
		{Meta: NodeMeta{ID: "x"}, BindAddr: "localhost:0"},                          // host name
		{Meta: NodeMeta{ID: "x"}, BindAddr: "127.0.0.1"},                            // no port
		{Meta: NodeMeta{ID: "x"}, BindAddr: "127.0.0.1:99999"},                      // bad port
		{Meta: NodeMeta{ID: "x"}, BindAddr: "127.0.0.1:0", AdvertiseAddr: "host:1"}, // advertise needs an IP
	} {
		cfg.Logger = testSlog(t)
		if m, err := New(cfg); err == nil {
			_ = m.Shutdown()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}

	m := startMembership(t, testNodeMeta("a"))
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := m.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := m.Join([]string{"127.0.0.1:1"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after Shutdown: %v", err)
	}
	if err := m.UpdateMeta(testNodeMeta("a")); !errors.Is(err, ErrClosed) {
		t.Errorf("UpdateMeta after Shutdown: %v", err)
	}
	if err := m.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("Leave after Shutdown: %v", err) // memberlist itself would panic
	}
}

func TestMembership_MemberStateString(t *testing.T) {
	want := map[MemberState]string{
		MemberAlive: "alive", MemberSuspect: "suspect", MemberDead: "dead", MemberLeft: "left", 0: "MemberState(0)",
	}
	for st, s := range want {
		if st.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(st), st.String(), s)
		}
	}
}

func TestMembership_SecretKeyKeepsOutsidersAway(t *testing.T) {
	start := func(id string, key []byte) *Membership {
		m, err := New(Config{
			Meta: NodeMeta{ID: id, RaftAddr: "127.0.0.1:1"}, BindAddr: "127.0.0.1:0", Fast: true,
			Logger: testSlog(t).With("node", id), SecretKey: key,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Shutdown() })
		return m
	}
	key := Key("the cluster secret")
	a, b := start("a", key), start("b", key)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("same secret: %v", err)
	}
	outsider := start("x", Key("another secret"))
	if n, err := outsider.Join([]string{a.Addr()}); err == nil && n > 0 {
		t.Fatalf("a node with another secret joined (%d)", n)
	}
	for _, m := range a.Members() {
		if m.Meta.ID == "x" {
			t.Fatalf("the outsider is a member: %+v", m)
		}
	}
}

// countingHandler counts the records logged at warning level and above.
type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.n}
}

// Junk UDP packets on the gossip port, which anyone who can reach it can
// send, are counted but do not flood the node's log.
func TestMembership_JunkPacketsDoNotFloodTheLog(t *testing.T) {
	membershipLeakCheck(t)
	var logged atomic.Int64
	m, err := New(Config{
		Meta: testNodeMeta("n1"), BindAddr: "127.0.0.1:0", Fast: true,
		Logger: slog.New(countingHandler{testSlog(t).Handler(), &logged}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	c, err := net.Dial("udp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const junk = 500
	for i := range junk {
		if _, err := c.Write([]byte{0xff, byte(i), 'j', 'u', 'n', 'k'}); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // let the socket buffer drain
		}
	}
	testkit.Poll{Timeout: 10 * time.Second, Every: 20 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		if n := m.logw.lines.Load(); n < junk/2 {
			return fmt.Errorf("counted %d memberlist complaints, want at least %d", n, junk/2)
		}
		return nil
	})
	if n := logged.Load(); n > 5 {
		t.Fatalf("%d warnings logged for %d junk packets; want them rate-limited", n, m.logw.lines.Load())
	}
}
