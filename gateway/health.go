package gateway

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// The health states of a node and of a shard.
const (
	// HealthReady: everything is as it should be.
	HealthReady = "READY"
	// HealthDegraded: the node serves, but something needs attention (a
	// member is down, a shard lost a voter or has no leader, a relay lags).
	// It stays in service: taking it out would not help.
	HealthDegraded = "DEGRADED"
	// HealthFailed: this node cannot serve (a replica of it halted, no shard
	// has a leader, it is still starting): send traffic elsewhere.
	HealthFailed = "FAILED"
)

// Health bounds. A voter further behind than VoterLagBound log entries, or
// a relay that has not caught up for RelayLagBound, degrades its shard.
const (
	VoterLagBound = 10_000
	RelayLagBound = 10 * time.Second
)

// Health is a node's health and its shards'.
type Health struct {
	State   string
	Reasons []string
	Shards  []*pb.ShardHealth
}

// Serving reports whether the node should receive traffic (READY or
// DEGRADED).
func (h Health) Serving() bool { return h.State != HealthFailed }

// failed is the health of a node that could not even assemble its status.
func failed(reason string) Health {
	return Health{State: HealthFailed, Reasons: []string{reason}}
}

// Health assesses this node and every shard from the backend's status (which
// asks every reachable member for its replicas) and, with NATS, the ingress
// streams. It is what /readyz, the gRPC health service, Status and the
// health metrics report; the last result is kept for the metrics.
func (s *Server) Health(ctx context.Context) Health {
	h := s.assess(ctx)
	s.lastHealth.Store(&h)
	return h
}

func (s *Server) assess(ctx context.Context) Health {
	st, err := s.backend.Status(ctx)
	if err != nil {
		h := failed(fmt.Sprintf("status: %v", err))
		s.withIngress(&h)
		return h
	}
	return s.healthOf(s.fillStatus(st))
}

// healthOf is AssessHealth of st plus this node's ingress.
func (s *Server) healthOf(st *pb.StatusResponse) Health {
	h := AssessHealth(st)
	s.withIngress(&h)
	return h
}

// withIngress fails h while the JetStream streams do not exist yet: once
// created they stay (SubmitAsync reports later NATS trouble itself), so this
// is a node still starting.
func (s *Server) withIngress(h *Health) {
	r, ok := s.async.(asyncReadier)
	if !ok {
		return
	}
	select {
	case <-r.Ready():
	default:
		h.State = HealthFailed
		h.Reasons = append([]string{"JetStream streams not created yet (NATS starting or unreachable)"}, h.Reasons...)
	}
}

// AssessHealth computes the health of the node that answered st (its
// NodeId) and of every shard, from the replicas' reports and the members'
// states in st. A shard is FAILED without a leader or when its leader's
// replica halted, DEGRADED when a voter is unreachable, halted or more than
// VoterLagBound entries behind, or its leader's ingress consumer is not
// running or its relay has not caught up for RelayLagBound. The node is
// FAILED when a replica of its own halted, no shard has a leader or most
// live peers declare other document types than it does (DEGRADED when some
// do),
// DEGRADED when a shard is not READY or a member is suspect or dead.
func AssessHealth(st *pb.StatusResponse) Health {
	h := Health{State: HealthReady}
	var own []string // reasons that fail this node
	byShard := map[uint32][]*pb.ShardStatus{}
	for _, r := range st.GetShards() {
		byShard[r.GetShard()] = append(byShard[r.GetShard()], r)
		if r.GetHalted() && r.GetNodeId() == st.GetNodeId() {
			own = append(own, fmt.Sprintf("shard %d: halted: %s", r.GetShard(), r.GetHaltError()))
		}
	}
	ids := make([]uint32, 0, len(byShard))
	for id := range byShard {
		ids = append(ids, id)
	}
	for id := uint32(0); id < st.GetShardCount(); id++ {
		if _, ok := byShard[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) == 0 {
		own = append(own, "no shard replicas yet (the cluster is forming or this node holds none)")
	}
	// A peer that declares other document types decides their commands
	// differently: the replicas would diverge. The node that differs from
	// most of its peers is the one to fix: it is FAILED; the others are
	// DEGRADED (they keep serving), so one misconfigured node does not take
	// the whole cluster out of its load balancer.
	var docReasons []string
	if mm := st.GetDocumentTypeMismatches(); len(mm) > 0 {
		peers := 0
		for _, n := range st.GetNodes() {
			if s := n.GetState(); n.GetNodeId() != st.GetNodeId() && (s == "alive" || s == "suspect") {
				peers++
			}
		}
		if 2*len(mm) > peers {
			own = append(own, mm...)
		} else {
			docReasons = mm
		}
	}
	members := map[string]string{}
	var memberReasons []string
	for _, n := range st.GetNodes() {
		members[n.GetNodeId()] = n.GetState()
		if s := n.GetState(); s == "suspect" || s == "dead" {
			memberReasons = append(memberReasons, fmt.Sprintf("node %s %s", n.GetNodeId(), s))
		}
	}
	led := 0
	var shardReasons []string
	for _, id := range ids {
		sh := assessShard(id, byShard[id], members)
		if leaderOf(byShard[id]) != "" {
			led++
		}
		h.Shards = append(h.Shards, sh)
		shardReasons = append(shardReasons, sh.Reasons...)
	}
	if len(ids) > 0 && led == 0 {
		own = append(own, "no shard has a leader")
	}
	h.Reasons = append(append(append(own, docReasons...), memberReasons...), shardReasons...)
	switch {
	case len(own) > 0:
		h.State = HealthFailed
	case len(h.Reasons) > 0:
		h.State = HealthDegraded
	}
	return h
}

// leaderOf is the shard's leader as its replicas know it: the one that
// says it leads, else the one the others follow.
func leaderOf(reps []*pb.ShardStatus) string {
	for _, r := range reps {
		if r.GetRole() == "Leader" {
			return r.GetNodeId()
		}
	}
	for _, r := range reps {
		if r.GetLeader() != "" {
			return r.GetLeader()
		}
	}
	return ""
}

func assessShard(id uint32, reps []*pb.ShardStatus, members map[string]string) *pb.ShardHealth {
	sh := &pb.ShardHealth{Shard: id, State: HealthReady}
	fail := func(format string, a ...any) {
		sh.State = HealthFailed
		sh.Reasons = append(sh.Reasons, fmt.Sprintf("shard %d: ", id)+fmt.Sprintf(format, a...))
	}
	degrade := func(format string, a ...any) {
		if sh.State == HealthReady {
			sh.State = HealthDegraded
		}
		sh.Reasons = append(sh.Reasons, fmt.Sprintf("shard %d: ", id)+fmt.Sprintf(format, a...))
	}
	if len(reps) == 0 {
		fail("no replica reachable")
		return sh
	}
	leader := leaderOf(reps)
	var lead *pb.ShardStatus
	replicaOn := map[string]*pb.ShardStatus{}
	var voters []string
	for _, r := range reps {
		replicaOn[r.GetNodeId()] = r
		if r.GetNodeId() == leader && r.GetRole() == "Leader" {
			lead = r
		}
		if len(r.GetVoters()) > len(voters) {
			voters = r.GetVoters()
		}
	}
	switch {
	case leader == "":
		fail("no leader")
	case lead != nil && lead.GetHalted():
		fail("leader %s halted: %s", leader, lead.GetHaltError())
	}
	for _, v := range voters {
		r := replicaOn[v]
		switch {
		case members[v] == "dead" || members[v] == "suspect":
			degrade("voter %s unreachable (%s)", v, members[v])
		case r == nil:
			degrade("voter %s unreachable", v)
		case r.GetHalted() && r != lead:
			degrade("voter %s halted: %s", v, r.GetHaltError())
		case lead != nil && r != lead && lead.GetLastLogIndex() > r.GetLastLogIndex()+VoterLagBound:
			degrade("voter %s behind by %d entries > %d", v, lead.GetLastLogIndex()-r.GetLastLogIndex(), VoterLagBound)
		}
	}
	if lead != nil {
		if in := lead.GetIngress(); in != "" && in != "running" && in != "starting" {
			degrade("ingress consumer on %s %s", leader, in)
		}
		if lag := time.Duration(lead.GetRelayLagMs()) * time.Millisecond; lag > RelayLagBound {
			degrade("relay on %s behind for %s (backlog %d rows at its last read) > %s", leader, lag.Round(time.Second), lead.GetRelayBacklog(), RelayLagBound)
		}
	}
	return sh
}

// Ready is nil when the node should receive traffic (READY or DEGRADED),
// else an error naming why not.
func (s *Server) Ready(ctx context.Context) error {
	if h := s.Health(ctx); !h.Serving() {
		return fmt.Errorf("%s: %s", h.State, strings.Join(h.Reasons, "; "))
	}
	return nil
}

// healthStates are the values of the state label, in order.
var healthStates = []string{HealthReady, HealthDegraded, HealthFailed}

// registerHealthMetrics exports the last assessed health as
// rhizon_node_health{state} and rhizon_shard_health{shard,state}: 1 for the
// current state, 0 for the others.
func (s *Server) registerHealthMetrics() error {
	meter := otel.Meter("github.com/rhizon/rhizon/gateway")
	node, err := meter.Int64ObservableGauge("rhizon.node.health",
		metric.WithDescription("This node's health: 1 for its current state (READY, DEGRADED or FAILED), 0 for the others."))
	if err != nil {
		return err
	}
	shard, err := meter.Int64ObservableGauge("rhizon.shard.health",
		metric.WithDescription("Each shard's health as this node sees it: 1 for its current state, 0 for the others."))
	if err != nil {
		return err
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		h := s.lastHealth.Load()
		if h == nil {
			return nil
		}
		for _, st := range healthStates {
			o.ObserveInt64(node, b2i(h.State == st), metric.WithAttributes(attribute.String("state", st)))
			for _, sh := range h.Shards {
				o.ObserveInt64(shard, b2i(sh.GetState() == st),
					metric.WithAttributes(attribute.Int("shard", int(sh.GetShard())), attribute.String("state", st)))
			}
		}
		return nil
	}, node, shard)
	if err != nil {
		return err
	}
	s.healthMetrics = reg
	return nil
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// healthCache holds the last assessment for the metrics.
type healthCache = atomic.Pointer[Health]

// JSONHealth is the body of GET /readyz.
type JSONHealth struct {
	// Ready: the node should receive traffic (READY or DEGRADED).
	Ready   bool              `json:"ready"`
	State   string            `json:"state"`
	Reasons []string          `json:"reasons,omitempty"`
	Shards  []JSONShardHealth `json:"shards,omitempty"`
}

// JSONShardHealth is one shard's health in JSONHealth.
type JSONShardHealth struct {
	Shard   uint32   `json:"shard"`
	State   string   `json:"state"`
	Reasons []string `json:"reasons,omitempty"`
}

func jsonShardHealth(shards []*pb.ShardHealth) []JSONShardHealth {
	out := make([]JSONShardHealth, len(shards))
	for i, sh := range shards {
		out[i] = JSONShardHealth{Shard: sh.GetShard(), State: sh.GetState(), Reasons: sh.GetReasons()}
	}
	return out
}
