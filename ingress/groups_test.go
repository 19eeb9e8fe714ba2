package ingress_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/ingresstest"
	"github.com/rhizon/rhizon/internal/testkit"
)

// TestIngress_RaftGroupConsumesEachOfItsShardsSubject: with 6 shards in 2
// Raft groups, publishers still name the shard (its subject), and each
// group's worker consumes the subject of every shard it carries: commands
// to entities of all 6 shards apply exactly once, and the ingress stream
// drains. Without a consumer per carried shard, the commands of shards 2-5
// would wait in the stream for ever.
func TestIngress_RaftGroupConsumesEachOfItsShardsSubject(t *testing.T) {
	e := startEnvWith(t, ingresstest.Options{Shards: 6, RaftGroups: 2}, nil)
	if got := len(e.node.Shards()); got != 2 {
		t.Fatalf("the node runs %d replicas, want one per group (2)", got)
	}
	const entities = 60
	shards := map[uint32]int{}
	var futures []jetstream.PubAckFuture
	for i := range entities {
		c := addCmd(fmt.Sprintf("g%d", i), fmt.Sprintf("k%d", i))
		shards[e.node.ShardOf(c.Address.ToActor())]++
		futures = append(futures, e.publish(t, c))
	}
	if len(shards) != 6 {
		t.Fatalf("the entities cover shards %v, want all 6", shards)
	}
	awaitAcks(t, futures)
	testkit.Eventually(t, 60*time.Second, "every command applied", func() (bool, string) {
		for i := range entities {
			if v, _ := e.counter(t, fmt.Sprintf("g%d", i)); v != 1 {
				return false, fmt.Sprintf("g%d (shard %d) at %d", i, e.node.ShardOf(actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: fmt.Sprintf("g%d", i)}), v)
			}
		}
		return true, ""
	})
	testkit.Eventually(t, 30*time.Second, "ingress drained", func() (bool, string) {
		m := e.streamMsgs(t, stream.IngressStream)
		return m == 0, fmt.Sprintf("%d messages left", m)
	})
	testkit.Eventually(t, 30*time.Second, "one event per command", func() (bool, string) {
		m := e.streamMsgs(t, stream.EventsStream)
		return m == entities, fmt.Sprintf("%d events", m)
	})
}
