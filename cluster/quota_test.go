package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/gateway"
)

// startQuotaNode is startNode with quotas: a real node (Raft, Badger on
// disk) behind a real gRPC gateway; it returns a Gateway stub.
func startQuotaNode(t testing.TB, quotas string) (*cluster.Node, pb.GatewayClient) {
	t.Helper()
	q, err := gateway.ParseQuotas("test", []byte(quotas))
	if err != nil {
		t.Fatal(err)
	}
	tn := startNodeWith(t, t.TempDir(), 4, func(c *gateway.Config) { c.Quotas = q })
	conn, err := grpc.NewClient(tn.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return tn.node, pb.NewGatewayClient(conn)
}

func kvCreate(entity string, doc string) *pb.SubmitRequest {
	return &pb.SubmitRequest{
		Address: &pb.Address{ActorType: "kv", EntityId: entity}, Type: "cmd.kv.create",
		Payload: []byte(`{"doc":{"v":"` + doc + `"}}`), IdempotencyKey: "k-" + entity,
	}
}

func errorReason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(interface{ GetReason() string }); ok {
			return info.GetReason()
		}
	}
	return ""
}

// A tenant past its storage quota is refused with quota_exceeded, measured on
// the node's real Badger store; another tenant keeps writing, and the
// over-quota tenant keeps reading.
func TestStorageQuotaOnBadger(t *testing.T) {
	n, gw := startQuotaNode(t, `{"tenants":{"a":{"storage_bytes":20000}},"storage_refresh":"20ms"}`)
	ctxA := metadata.AppendToOutgoingContext(ctx(t), "authorization", "Bearer "+tokenA)
	ctxB := metadata.AppendToOutgoingContext(ctx(t), "authorization", "Bearer "+tokenB)
	doc := fmt.Sprintf("%01000d", 7)
	var refused error
	written := 0
	// The usage is re-measured every 20 ms; a tenant can write what it
	// manages meanwhile past its quota, far fewer than 500 commits.
	for i := 0; i < 500 && refused == nil; i++ {
		_, err := gw.Submit(ctxA, kvCreate(fmt.Sprint("e", i), doc))
		switch {
		case err == nil:
			written++
		case status.Code(err) == codes.ResourceExhausted:
			refused = err
		default:
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if refused == nil {
		t.Fatalf("%d writes of ~1 KB never hit a 20000-byte quota", written)
	}
	if errorReason(refused) != gateway.ReasonQuotaExceeded {
		t.Fatalf("refusal %v; want reason %s", refused, gateway.ReasonQuotaExceeded)
	}
	used, err := n.TenantBytes()
	if err != nil {
		t.Fatal(err)
	}
	if used["a"] < 20000 {
		t.Fatalf("refused at %d bytes measured, under the quota", used["a"])
	}
	t.Logf("refused after %d writes; tenant a stores %d bytes", written, used["a"])
	if _, err := gw.Submit(ctxB, kvCreate("b1", doc)); err != nil {
		t.Fatalf("tenant b (no quota) refused: %v", err)
	}
	if _, err := gw.Get(ctxA, &pb.GetRequest{Address: &pb.Address{ActorType: "kv", EntityId: "e0"}}); err != nil {
		t.Fatalf("reads over quota: %v", err)
	}
}

// BenchmarkTenantFlood: tenant a floods at 10x its rate quota while tenant b
// sends at a steady pace below its own; b's p99 with the flood is compared
// with b's p99 alone, and a must be refused with ResourceExhausted carrying
// retry-after. Run:
//
//	go test -run '^$' -bench BenchmarkTenantFlood -benchtime 1x ./cluster/
func BenchmarkTenantFlood(b *testing.B) {
	const (
		aRate   = 50 // a's quota, requests per second
		aFlood  = 10 * aRate
		bPace   = 10 * time.Millisecond // b: 100 per second
		bCount  = 300
		workers = 16
	)
	_, gw := startQuotaNode(b, fmt.Sprintf(`{"tenants":{"a":{"rate":%d,"burst":%d}}}`, aRate, aRate))
	ctxA := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tokenA)
	ctxB := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tokenB)
	var seq atomic.Int64
	runB := func() []time.Duration {
		lat := make([]time.Duration, 0, bCount)
		tick := time.NewTicker(bPace)
		defer tick.Stop()
		for range bCount {
			<-tick.C
			start := time.Now()
			if _, err := gw.Submit(ctxB, kvCreate(fmt.Sprint("b", seq.Add(1)), "x")); err != nil {
				b.Fatalf("tenant b: %v", err)
			}
			lat = append(lat, time.Since(start))
		}
		return lat
	}
	p99 := func(l []time.Duration) time.Duration {
		slices.Sort(l)
		return l[len(l)*99/100]
	}
	for b.Loop() {
		runB() // warm-up
		alone := p99(runB())

		stop := make(chan struct{})
		var wg sync.WaitGroup
		var accepted, refused, withRetry atomic.Int64
		perWorker := time.Second * workers / aFlood
		for w := range workers {
			wg.Go(func() {
				tick := time.NewTicker(perWorker)
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					var hdr metadata.MD
					_, err := gw.Submit(ctxA, kvCreate(fmt.Sprintf("a%d-%d", w, i), "x"), grpc.Header(&hdr))
					switch {
					case err == nil:
						accepted.Add(1)
					case status.Code(err) == codes.ResourceExhausted:
						refused.Add(1)
						if len(hdr.Get(gateway.RetryAfterMsTrailer)) > 0 {
							withRetry.Add(1)
						}
					}
				}
			})
		}
		start := time.Now()
		flooded := p99(runB())
		elapsed := time.Since(start)
		close(stop)
		wg.Wait()
		ratio := float64(flooded) / float64(alone)
		b.ReportMetric(float64(alone.Microseconds())/1000, "b_p99_alone_ms")
		b.ReportMetric(float64(flooded.Microseconds())/1000, "b_p99_flood_ms")
		b.ReportMetric(ratio, "b_p99_ratio")
		b.ReportMetric(float64(accepted.Load())/elapsed.Seconds(), "a_accepted/s")
		b.ReportMetric(float64(refused.Load())/elapsed.Seconds(), "a_refused/s")
		if refused.Load() == 0 || withRetry.Load() != refused.Load() {
			b.Errorf("a refused %d times, %d with retry-after; want refusals, all with retry-after", refused.Load(), withRetry.Load())
		}
		if ratio > 2 {
			b.Errorf("b's p99 went from %v alone to %v under a's flood (%.2fx); the target is 2x", alone, flooded, ratio)
		}
	}
}
