package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

// cutProxy stands between the client and a gateway, so that the test can
// cut the client's connections (and the streams on them) with calls in
// flight while the node goes on applying them.
type cutProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cuts   atomic.Int32
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target}
	go p.serve()
	t.Cleanup(func() { l.Close(); p.cut() })
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c); s.Close() }()
		go func() { _, _ = io.Copy(c, s); c.Close() }()
	}
}

// cut closes every connection through the proxy; new ones may connect.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.cuts.Add(1)
}

// Streamed submits through connection cuts and a leader's death: many
// goroutines add to counters, each add with its own idempotency key, while
// the client's connections are cut again and again and then a shard leader
// is killed. Every call returns within its deadline; the calls that end
// with an unknown outcome are submitted again with the same request (same
// key), until answered; then every counter equals the adds acknowledged: no
// add lost, none applied twice.
func TestStreamedSubmitsThroughCutsAndLeaderKill(t *testing.T) {
	tc := startCluster(t)
	var proxies []*cutProxy
	var addrs []string
	for _, a := range tc.Addrs() {
		p := newCutProxy(t, a)
		proxies = append(proxies, p)
		addrs = append(addrs, p.l.Addr().String())
	}
	// Through the proxies only (no routing: it would connect to the nodes'
	// own addresses). Half the load goes through a client that retries
	// (Submit's own retries after a cut), half through one that does not,
	// so that every outcome a cut leaves unknown reaches its caller: one
	// wrongly reported as not applied would show as an add applied but
	// neither acknowledged nor resubmitted.
	dial := func(retries int) *Client {
		c, err := DialCluster(addrs, WithToken(clusterToken), WithLeaderRouting(false), WithRetries(retries),
			WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	clients := []*Client{dial(3), dial(0)}

	const (
		workers  = 32
		deadline = 10 * time.Second
		slack    = 2 * time.Second // scheduling on a loaded 2-core machine
	)
	ents := entities(16)
	var (
		tl      tally
		acked   atomic.Int64
		mu      sync.Mutex
		unknown []*pb.SubmitRequest // answered with an unknown outcome
		others  []error
	)
	submit := func(c *Client, req *pb.SubmitRequest) bool {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		resp, err := c.Submit(ctx, req)
		if took := time.Since(start); took > deadline+slack {
			t.Errorf("a submit took %v, past its %v deadline", took, deadline)
		}
		switch {
		case err == nil && resp.GetResult().GetStatus() == pb.Status_STATUS_ACCEPTED:
			tl.add(req.GetAddress().GetEntityId())
			acked.Add(1)
			return true
		case err != nil && IsUnknownOutcome(err):
			mu.Lock()
			unknown = append(unknown, req)
			mu.Unlock()
		case err != nil && IsNotApplied(err):
			// Not applied: not counted, nothing to learn.
		default:
			mu.Lock()
			others = append(others, fmt.Errorf("counter/%s: %v, %v", req.GetAddress().GetEntityId(), resp.GetResult(), err))
			mu.Unlock()
		}
		return false
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	for w := range workers {
		wg.Go(func() {
			for i := w; ; i += workers {
				select {
				case <-stop:
					return
				default:
				}
				submit(clients[w%2], &pb.SubmitRequest{
					Address: &pb.Address{ActorType: "counter", EntityId: ents[i%len(ents)]},
					Type:    "cmd.counter.add", Payload: []byte(`{"amount":1}`),
				})
			}
		})
	}
	// Cut every client connection each time 40 more adds were acknowledged.
	grew := func(n int64) func() (bool, string) {
		want := acked.Load() + n
		return func() (bool, string) {
			return acked.Load() >= want, fmt.Sprintf("%d adds acknowledged, want %d", acked.Load(), want)
		}
	}
	for range 8 {
		testkit.Eventually(t, 30*time.Second, "adds between cuts", grew(40))
		for _, p := range proxies {
			p.cut()
		}
	}
	// Then kill the leader of a shard, with the load running.
	// Polled: while a leadership moves, two replicas may both think they
	// lead for an instant, and the shard has no single leader to name.
	var victim *clustertest.Node
	testkit.EventuallyNil(t, 15*time.Second, "a single leader of the entity's shard", func() (err error) {
		victim, err = tc.Leader(shardOfEntity(ents[0]))
		return err
	})
	if err := victim.Kill(); err != nil {
		t.Errorf("kill %s: %v", victim.ID, err)
	}
	testkit.Eventually(t, 30*time.Second, "survivors lead every shard", func() (bool, string) {
		ls := tc.Leaders()
		return !slices.Contains(ls, ""), fmt.Sprint("leaders ", ls)
	})
	testkit.Eventually(t, 30*time.Second, "adds after the kill", grew(100))
	for _, p := range proxies {
		p.cut()
	}
	testkit.Eventually(t, 30*time.Second, "adds after the last cut", grew(40))
	stopLoad()

	opened := streamsOpened(clients[0]) + streamsOpened(clients[1])
	t.Logf("%d adds acknowledged, %d unknown outcomes to resubmit, %d streams opened", acked.Load(), len(unknown), opened)
	if opened < 4 {
		t.Errorf("%d streams opened: the cuts did not reopen the stream (or the submits were not streamed)", opened)
	}
	// Resubmit the unknown ones, same request, until each is answered.
	for _, req := range unknown {
		testkit.Poll{Timeout: 30 * time.Second, Every: 20 * time.Millisecond}.Eventually(t, "resubmitted "+req.GetIdempotencyKey(), func() (bool, string) {
			ok := submit(clients[0], req)
			return ok, "not answered yet"
		})
	}
	mu.Lock()
	if len(others) > 0 {
		t.Errorf("%d submits failed otherwise, first: %v", len(others), errors.Join(others[:1]...))
	}
	mu.Unlock()
	if t.Failed() {
		t.FailNow()
	}
	check, err := DialCluster(tc.Addrs(), WithToken(clusterToken), WithRetries(10))
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	checkTally(t, check, &tl)
}
