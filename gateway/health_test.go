package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// threeNodes is the status node n1 reports of a 3-node cluster with two
// shards, every replica on every node, shard 0 led by n1 and shard 1 by n2;
// change applies a condition to it.
func threeNodes(change func(st *pb.StatusResponse)) *pb.StatusResponse {
	voters := []string{"n1", "n2", "n3"}
	st := &pb.StatusResponse{NodeId: "n1", ShardCount: 2}
	for _, n := range voters {
		st.Nodes = append(st.Nodes, &pb.NodeStatus{NodeId: n, State: "alive"})
	}
	for id, leader := range []string{"n1", "n2"} {
		for _, n := range voters {
			role := "Follower"
			if n == leader {
				role = "Leader"
			}
			st.Shards = append(st.Shards, &pb.ShardStatus{Shard: uint32(id), NodeId: n, Role: role, Leader: leader,
				LastLogIndex: 100, Voters: voters, Ingress: map[bool]string{true: "running"}[n == leader]})
		}
	}
	if change != nil {
		change(st)
	}
	return st
}

// replica finds shard id's replica on node in st.
func replica(st *pb.StatusResponse, id uint32, node string) *pb.ShardStatus {
	for _, r := range st.Shards {
		if r.Shard == id && r.NodeId == node {
			return r
		}
	}
	panic("no replica")
}

// drop removes node's replicas from st (its report did not arrive).
func drop(st *pb.StatusResponse, node string) {
	var keep []*pb.ShardStatus
	for _, r := range st.Shards {
		if r.NodeId != node {
			keep = append(keep, r)
		}
	}
	st.Shards = keep
}

func TestAssessHealth_StatesAndReasons(t *testing.T) {
	for _, c := range []struct {
		name   string
		st     *pb.StatusResponse
		node   string
		shards []string // state of shard 0, shard 1
		reason string   // a reason that must be listed ("" for none at all)
	}{
		{"all well", threeNodes(nil), HealthReady, []string{HealthReady, HealthReady}, ""},
		{"a member dead", threeNodes(func(st *pb.StatusResponse) { st.Nodes[2].State = "dead"; drop(st, "n3") }),
			HealthDegraded, []string{HealthDegraded, HealthDegraded}, "shard 0: voter n3 unreachable (dead)"},
		{"a member suspect", threeNodes(func(st *pb.StatusResponse) { st.Nodes[2].State = "suspect" }),
			HealthDegraded, []string{HealthDegraded, HealthDegraded}, "node n3 suspect"},
		{"a report missing", threeNodes(func(st *pb.StatusResponse) { drop(st, "n3") }),
			HealthDegraded, []string{HealthDegraded, HealthDegraded}, "shard 1: voter n3 unreachable"},
		{"a leaderless shard", threeNodes(func(st *pb.StatusResponse) {
			for _, n := range []string{"n1", "n2", "n3"} {
				r := replica(st, 1, n)
				r.Role, r.Leader = "Candidate", ""
			}
		}), HealthDegraded, []string{HealthReady, HealthFailed}, "shard 1: no leader"},
		{"no leader anywhere", threeNodes(func(st *pb.StatusResponse) {
			for _, r := range st.Shards {
				r.Role, r.Leader = "Follower", ""
			}
		}), HealthFailed, []string{HealthFailed, HealthFailed}, "no shard has a leader"},
		{"a halted replica here", threeNodes(func(st *pb.StatusResponse) {
			r := replica(st, 1, "n1")
			r.Halted, r.HaltError = true, "value log: input/output error"
		}), HealthFailed, []string{HealthReady, HealthDegraded}, "shard 1: halted: value log: input/output error"},
		{"a halted replica elsewhere", threeNodes(func(st *pb.StatusResponse) { replica(st, 0, "n3").Halted = true }),
			HealthDegraded, []string{HealthDegraded, HealthReady}, "shard 0: voter n3 halted"},
		{"a halted leader elsewhere", threeNodes(func(st *pb.StatusResponse) { replica(st, 1, "n2").Halted = true }),
			HealthDegraded, []string{HealthReady, HealthFailed}, "shard 1: leader n2 halted"},
		{"a voter behind", threeNodes(func(st *pb.StatusResponse) { replica(st, 0, "n1").LastLogIndex = 100 + VoterLagBound + 1 }),
			HealthDegraded, []string{HealthDegraded, HealthReady}, "shard 0: voter n2 behind by 10001 entries > 10000"},
		{"ingress stopped", threeNodes(func(st *pb.StatusResponse) { replica(st, 1, "n2").Ingress = "not running: stopped" }),
			HealthDegraded, []string{HealthReady, HealthDegraded}, "shard 1: ingress consumer on n2 not running: stopped"},
		{"relay behind", threeNodes(func(st *pb.StatusResponse) {
			r := replica(st, 0, "n1")
			r.RelayLagMs, r.RelayBacklog = 12_000, 1024
		}), HealthDegraded, []string{HealthDegraded, HealthReady}, "shard 0: relay on n1 behind for 12s (backlog 1024 rows at its last read) > 10s"},
		{"no cluster yet", &pb.StatusResponse{NodeId: "n1"}, HealthFailed, nil, "no shard replicas yet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := AssessHealth(c.st)
			if h.State != c.node {
				t.Errorf("node %s, want %s; reasons %q", h.State, c.node, h.Reasons)
			}
			var got []string
			for _, sh := range h.Shards {
				got = append(got, sh.State)
			}
			if strings.Join(got, ",") != strings.Join(c.shards, ",") {
				t.Errorf("shards %v, want %v; reasons %q", got, c.shards, h.Reasons)
			}
			all := strings.Join(h.Reasons, "\n")
			if (c.reason == "") != (len(h.Reasons) == 0) || !strings.Contains(all, c.reason) {
				t.Errorf("reasons %q, want one containing %q", h.Reasons, c.reason)
			}
		})
	}
}

// The metrics say the last assessed state: 1 for it, 0 for the others.
func TestHealthMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })
	h := newHarness(t)
	h.be.status = threeNodes(func(st *pb.StatusResponse) { st.Nodes[2].State = "dead"; drop(st, "n3") })
	h.srv.UpdateHealth(context.Background())

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			g, ok := m.Data.(metricdata.Gauge[int64])
			if !ok {
				continue
			}
			for _, dp := range g.DataPoints {
				var kv []string
				for _, a := range dp.Attributes.ToSlice() {
					kv = append(kv, string(a.Key)+"="+a.Value.String())
				}
				got[m.Name+"{"+strings.Join(kv, ",")+"}"] = dp.Value
			}
		}
	}
	for k, want := range map[string]int64{
		"rhizon.node.health{state=DEGRADED}":          1,
		"rhizon.node.health{state=READY}":             0,
		"rhizon.node.health{state=FAILED}":            0,
		"rhizon.shard.health{shard=1,state=DEGRADED}": 1,
		"rhizon.shard.health{shard=1,state=READY}":    0,
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %d (present %v), want %d; all %v", k, v, ok, want, got)
		}
	}
}

// Every service registered on the gRPC server answers a health check with
// the node's health, not NOT_FOUND: a probe may name Admin, or the
// cluster's Internal, registered after the gateway as the node does.
func TestGRPCHealth_EveryRegisteredServiceFollowsTheNode(t *testing.T) {
	be := newFakeBackend(t)
	srv, err := New(Config{Backend: be, Auth: testAuth(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NodeID: "n1", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(ServerOptions()...)
	srv.RegisterGRPC(gs)
	pb.RegisterInternalServer(gs, pb.UnimplementedInternalServer{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); gs.Stop() })
	hc := healthpb.NewHealthClient(conn)

	services := []string{""}
	for name := range gs.GetServiceInfo() {
		services = append(services, name)
	}
	slices.Sort(services)
	for _, want := range []string{pb.Gateway_ServiceDesc.ServiceName, pb.Admin_ServiceDesc.ServiceName,
		pb.Internal_ServiceDesc.ServiceName, healthpb.Health_ServiceDesc.ServiceName} {
		if !slices.Contains(services, want) {
			t.Fatalf("the server registers %v, not %s", services, want)
		}
	}
	for _, c := range []struct {
		name   string
		status *pb.StatusResponse
		want   healthpb.HealthCheckResponse_ServingStatus
	}{
		{"ready", threeNodes(nil), healthpb.HealthCheckResponse_SERVING},
		{"degraded", threeNodes(func(st *pb.StatusResponse) { st.Nodes[2].State = "dead"; drop(st, "n3") }), healthpb.HealthCheckResponse_SERVING},
		{"failed", threeNodes(func(st *pb.StatusResponse) { replica(st, 1, "n1").Halted = true }), healthpb.HealthCheckResponse_NOT_SERVING},
		{"ready again", threeNodes(nil), healthpb.HealthCheckResponse_SERVING},
	} {
		be.status = c.status
		srv.UpdateHealth(context.Background())
		for _, svc := range services {
			r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || r.Status != c.want {
				t.Errorf("%s: health %q = %v %v, want %v", c.name, svc, r.GetStatus(), err, c.want)
			}
		}
	}
}
