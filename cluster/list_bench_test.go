package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

// BenchmarkList100k measures List and index queries over 100,000 documents
// of type user (indexed on age and email) on one node of 8 shards (real
// Raft log, Badger on disk, gRPC), loaded with SubmitBatch calls of 500.
// Every List reads all 8 shards through their leaders with a read barrier
// and counts every match. Run:
//
//	go test -run '^$' -bench List100k -benchtime 50x -timeout 30m ./cluster/
func BenchmarkList100k(b *testing.B) {
	const docs = 100_000
	c := clustertest.Start(b, clustertest.Options{
		Nodes: 1, Shards: 8, ShardTemplate: testShardConfig(), Tokens: listTokens,
		Registry: func(int) *actor.Registry { return userRegistry(b, "user:age,email") },
	})
	addr := c.Nodes[0].Addr
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	gw := pb.NewGatewayClient(conn)
	actx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tokenA)
	start := time.Now()
	const batch = 500
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for first := w * batch; first < docs; first += 4 * batch {
				req := &pb.SubmitBatchRequest{}
				for i := first; i < first+batch; i++ {
					id := fmt.Sprintf("u%06d", i)
					req.Commands = append(req.Commands, &pb.SubmitRequest{
						Address: &pb.Address{Tenant: "a", Workspace: "w", ActorType: "user", EntityId: id}, Type: "cmd.user.create",
						Payload: fmt.Appendf(nil, `{"doc":{"email":"%s@example.com","age":%d,"name":"user number %d"}}`, id, i%100, i), IdempotencyKey: "c-" + id,
					})
				}
				resp, err := gw.SubmitBatch(actx, req)
				if err != nil {
					errs <- err
					return
				}
				for _, o := range resp.GetOutcomes() {
					if o.GetResponse().GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
						errs <- fmt.Errorf("not accepted: %v", o)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d documents in %v (%.0f/s)", docs, time.Since(start).Round(time.Millisecond), docs/time.Since(start).Seconds())
	cl, err := client.Dial(addr, client.WithToken(tokenA), client.WithTenant("a"), client.WithWorkspace("w"))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	mid, err := cl.List(context.Background(), &pb.ListRequest{ActorType: "user", Prefix: "u04999", Limit: 100})
	if err != nil || mid.GetNextPageToken() != "" {
		b.Fatalf("prefix page: %v %v", mid, err)
	}
	page1, err := cl.List(context.Background(), &pb.ListRequest{ActorType: "user", Limit: 100})
	if err != nil || page1.GetCount() != docs {
		b.Fatalf("first page: count %d, %v", page1.GetCount(), err)
	}
	for _, q := range []struct {
		name string
		req  *pb.ListRequest
		want int
	}{
		{"by-id-first-100", &pb.ListRequest{ActorType: "user", Limit: 100}, 100},
		{"by-id-next-100", &pb.ListRequest{ActorType: "user", Limit: 100, PageToken: page1.GetNextPageToken()}, 100},
		{"prefix-10", &pb.ListRequest{ActorType: "user", Prefix: "u04999"}, 10},
		{"email-eq", &pb.ListRequest{ActorType: "user", Where: []*pb.ListWhere{{Field: "email", Op: "=", Value: `"u012345@example.com"`}}}, 1},
		{"age-eq-100-of-1000", &pb.ListRequest{ActorType: "user", Limit: 100, Where: []*pb.ListWhere{{Field: "age", Op: "=", Value: "42"}}}, 100},
		{"age-range-100-of-10000", &pb.ListRequest{ActorType: "user", Limit: 100, Where: []*pb.ListWhere{{Field: "age", Op: ">=", Value: "30"}, {Field: "age", Op: "<", Value: "40"}}}, 100},
	} {
		b.Run(q.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				t0 := time.Now()
				resp, err := cl.List(context.Background(), q.req)
				lat = append(lat, time.Since(t0))
				if err != nil || len(resp.GetItems()) != q.want {
					b.Fatalf("%s: %d items, %v", q.name, len(resp.GetItems()), err)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
