package ingress_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/ingresstest"
	"github.com/rhizon/rhizon/internal/testkit"
)

// The leader's replica status carries its ingress consumer and relay
// (ProbeShard): running and caught up while NATS serves; once NATS is gone
// the consumer cannot bind and the relay cannot publish a new event, and the
// node's health says DEGRADED with both reasons.
func TestProbeShard_ReportsConsumerAndRelayToHealth(t *testing.T) {
	e := ingresstest.Start(t, ingresstest.Options{Shards: 1})
	e.Node.SetReplicaProbe(e.Manager.ProbeShard)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	assess := func() (*pb.ShardStatus, gateway.Health, error) {
		st, err := e.Node.Status(ctx)
		if err != nil {
			return nil, gateway.Health{}, err
		}
		for _, r := range st.Shards {
			if r.Role == "Leader" {
				return r, gateway.AssessHealth(st), nil
			}
		}
		return nil, gateway.Health{}, fmt.Errorf("no leader in %v", st.Shards)
	}
	testkit.Poll{Timeout: 20 * time.Second, Every: 100 * time.Millisecond}.Eventually(t, "consumer running, relay caught up, READY", func() (bool, string) {
		r, h, err := assess()
		if err != nil {
			return false, err.Error()
		}
		return r.Ingress == "running" && r.RelayLagMs == 0 && h.State == gateway.HealthReady, fmt.Sprintf("%v; %s %q", r, h.State, h.Reasons)
	})

	e.NATS.Shutdown()
	cmd := actor.Command{ID: "health-1", Type: "cmd.counter.add", IdempotencyKey: "health-1", Payload: []byte(`{"amount":1}`),
		Address: actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "h1"}, Security: producer}
	if res, err := e.Node.Submit(ctx, cmd); err != nil || res.Status != actor.StatusAccepted {
		t.Fatalf("submit while NATS is down: %+v %v", res, err)
	}
	testkit.Poll{Timeout: 60 * time.Second, Every: 250 * time.Millisecond}.Eventually(t, "DEGRADED: consumer not running, relay behind", func() (bool, string) {
		r, h, err := assess()
		if err != nil {
			return false, err.Error()
		}
		all := strings.Join(h.Reasons, "\n")
		return h.State == gateway.HealthDegraded && strings.Contains(all, "ingress consumer on n1 not running") &&
			strings.Contains(all, "relay on n1 behind"), fmt.Sprintf("ingress %q lag %dms; %s %q", r.Ingress, r.RelayLagMs, h.State, h.Reasons)
	})
}
