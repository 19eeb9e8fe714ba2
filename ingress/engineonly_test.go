package ingress_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
)

// What only the engine may make (the timer verb, its idempotency keys, an
// actor's send principal) is refused from a producer on NATS, as at the
// gateway: the refusal is in the validation every path shares.
func TestIngress_EngineOnlyCommandsRefused(t *testing.T) {
	e := startEnv(t, 1, nil)
	timer := &pb.Command{
		Type:           "cmd.lock.timer",
		Address:        &pb.Address{Tenant: "t", Workspace: "w", ActorType: "lock", EntityId: "l1"},
		Payload:        []byte(`{"name":"expiry","at":1}`),
		IdempotencyKey: "forged-timer",
	}
	e.publish(t, timer)
	e.publish(t, addCmd("c1", "timer/expiry/1"))
	e.publish(t, addCmd("c1", "send/0123"))
	e.publish(t, addCmd("c1", "ok"))
	testkit.Eventually(t, 20*time.Second, "the allowed command applied", func() (bool, string) {
		v, _ := e.counter(t, "c1")
		return v == 1, fmt.Sprintf("c1=%d", v)
	})
	testkit.Eventually(t, 20*time.Second, "three dead letters", func() (bool, string) {
		m := e.streamMsgs(t, stream.DeadStream)
		return m == 3, fmt.Sprintf("%d dead letters", m)
	})
	s, err := e.js.Stream(context.Background(), stream.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		r := m.Header.Get(stream.HeaderReason)
		if !strings.HasPrefix(r, "invalid: ") || !strings.Contains(r, "timer fires") && !strings.Contains(r, "engine keeps") {
			t.Errorf("dead letter %d: reason %q, want the engine-only refusal", seq, r)
		}
	}
}
