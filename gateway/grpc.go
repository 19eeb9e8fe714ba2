package gateway

import (
	"context"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// MaxModuleBytes bounds a WebAssembly module deployed with
// Admin.DeployActor: it travels in one control log entry, and is kept in
// the control state (and its snapshots) on every node.
const MaxModuleBytes = 16 << 20

// MaxRecvMsgSize is the largest request the gRPC server accepts: a maximal
// deployed module plus room for the rest of the message, so an oversized
// module reaches the gateway and gets a message naming the limit, while a
// huge one is refused by the transport. Command payloads have their own,
// smaller limit (actor.MaxPayloadBytes), checked per command.
const MaxRecvMsgSize = MaxModuleBytes + 64<<10

// streamWorkers is the number of goroutines kept to run calls: about the
// calls a node has in flight under load (each waits for its Raft commit).
const streamWorkers = 256

// readyCheckTimeout bounds one readiness probe of the backend.
const readyCheckTimeout = 2 * time.Second

// ServerOptions returns the options a gRPC server for the gateway should be
// built with: the receive limit above and the OpenTelemetry stats handler,
// so that every RPC has a server span (and its trace context reaches the
// recorded command). W3C trace context and baggage are extracted whatever
// global propagator is installed, because the command's traceparent field
// is defined as W3C.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		// A call runs on a reused worker goroutine, whose stack has grown
		// already: a fresh goroutine per call grew its stack on every
		// Submit (runtime.newstack was 3% of node CPU under load). Calls
		// beyond the workers still get a goroutine of their own.
		grpc.NumStreamWorkers(streamWorkers),
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
		)),
	}
}

// RegisterGRPC registers the Gateway and Admin services, the standard health service
// and server reflection on gs. Health and reflection need no token (the
// Gateway methods authenticate themselves; there is no interceptor).
//
// Health: "" (the whole server) and every service registered on gs
// (Gateway, Admin, the node's Internal, health and reflection themselves)
// are SERVING while the node is READY or DEGRADED and NOT_SERVING when it
// is FAILED (Health): a probe may name any of them. The names are read from
// gs at each assessment, so services registered after this call (the
// cluster's Internal) follow too. Its first value is taken now; call
// WatchHealth to keep it current, and Shutdown to drain. Liveness is HTTP /healthz, which only says the process
// answers: a degraded or failed node is not to be restarted for it.
func (s *Server) RegisterGRPC(gs *grpc.Server) {
	pb.RegisterGatewayServer(gs, s)
	pb.RegisterAdminServer(gs, adminServer{s: s})
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)
	s.grpcServer.Store(gs)
	s.UpdateHealth(context.Background())
}

// healthServices are the gRPC health service names that follow Health: ""
// and every service registered on the gRPC server, taken from the server
// rather than a list here, which would miss the next service added.
// Registering is only allowed before Serve, so reading the services of a
// serving server races with nothing.
func (s *Server) healthServices() []string {
	names := []string{""}
	gs := s.grpcServer.Load()
	if gs == nil {
		return append(names, pb.Gateway_ServiceDesc.ServiceName)
	}
	for name := range gs.GetServiceInfo() {
		names = append(names, name)
	}
	return names
}

// UpdateHealth assesses the node once and sets the gRPC health services
// from it. It reports whether the node serves (READY or DEGRADED).
func (s *Server) UpdateHealth(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, readyCheckTimeout)
	defer cancel()
	h := s.Health(ctx)
	st := healthpb.HealthCheckResponse_SERVING
	if !h.Serving() {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	for _, svc := range s.healthServices() {
		s.health.SetServingStatus(svc, st)
	}
	return h.Serving()
}

// WatchHealth assesses the node every interval until ctx ends, so that gRPC
// health watchers (load balancers, Kubernetes gRPC probes) and the health
// metrics follow it. While the node is FAILED (starting, most often) it
// looks every quarter second, so that it enters service as soon as it can.
// Run it in its own goroutine.
func (s *Server) WatchHealth(ctx context.Context, interval time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			next := interval
			if !s.UpdateHealth(ctx) {
				next = min(interval, failedRecheck)
			}
			t.Reset(next)
		}
	}
}

// failedRecheck is how often WatchHealth looks at a FAILED node.
const failedRecheck = 250 * time.Millisecond

// Shutdown marks every service NOT_SERVING so that balancers stop sending
// new calls before the gRPC server drains, and ends open Watch streams with
// Unavailable (clients resume elsewhere from their last sequence). Later
// UpdateHealth calls do not undo it.
func (s *Server) Shutdown() {
	s.health.Shutdown()
	if s.healthMetrics != nil {
		_ = s.healthMetrics.Unregister()
	}
	s.closeOnce.Do(func() { close(s.closing) })
}
