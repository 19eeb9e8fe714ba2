package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

// Commands without idempotency keys published to the ingress stream while
// the leader of their shard is killed (kill -9) and restarted: every command
// JetStream stored applies exactly once. The next leader reads from the
// first message the dead one had not purged: the ones it applied since its
// last purge come again and are replays (their keys derive from the stream
// sequence), none is skipped.
func TestIngress_LeaderKilledUnderLoadAppliesEveryStoredCommandOnce(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	c.withNATS()
	for _, p := range c.nodes {
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 90*time.Second)
	c.waitJetStream(60 * time.Second)

	// Four entities on the victim's shard, four elsewhere.
	first, victimShard := pickEntity("counter", "k")
	ents := []string{first}
	for i := 0; len(ents) < 4; i++ {
		if id, sh := pickEntity("counter", "k"+strconv.Itoa(i)+"-"); sh == victimShard {
			ents = append(ents, id)
		}
	}
	for i := 0; len(ents) < 8; i++ {
		id, _ := pickEntity("counter", "o"+strconv.Itoa(i)+"-", victimShard)
		ents = append(ents, id)
	}
	victim := c.leaderOf(c.nodes[0], victimShard)
	var pub *nodeProc
	for _, p := range c.nodes {
		if p != victim {
			pub = p
		}
	}
	js := natsJS(t, pub.natsURL(t))

	// The publisher retries each message under its own id until JetStream
	// stores it, so stored counts every command exactly.
	var mu sync.Mutex
	stored := map[string]int64{}
	total := func() (n int64) {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range stored {
			n += v
		}
		return n
	}
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ent := ents[i%len(ents)]
			addr := &pb.Address{Tenant: "t", Workspace: "shop", ActorType: "counter", EntityId: ent}
			data, _ := proto.Marshal(&pb.Command{Type: "cmd.counter.add", Address: addr, Payload: []byte(`{"amount":1}`)})
			msg := nats.NewMsg(stream.IngressSubject(shard.Of(addr.ToActor(), 8)))
			msg.Data = data
			msg.Header.Set(stream.HeaderAuthorization, "Bearer "+clusterToken)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID("kill-"+strconv.Itoa(i)))
				cancel()
				if err == nil {
					break
				}
				// Never given up: one stored and not counted would look
				// like a command applied twice. The cluster is back soon.
				time.Sleep(100 * time.Millisecond)
			}
			mu.Lock()
			stored[ent]++
			mu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-pubDone
	}()
	more := func(n int64, what string) {
		t.Helper()
		from := total()
		testkit.Eventually(t, 60*time.Second, what, func() (bool, string) {
			got := total() - from
			return got >= n, fmt.Sprintf("%d of %d more stored", got, n)
		})
	}
	more(300, "commands stored before the kill")
	victim.kill()
	t.Logf("killed %s, leader of shard %d, after %d stored", victim.id, victimShard, total())
	more(300, "commands stored with the leader dead")
	victim.start(t)
	more(300, "commands stored after the restart")
	close(stop)
	<-pubDone

	cl := c.client(pub)
	mu.Lock()
	want := maps.Clone(stored)
	mu.Unlock()
	testkit.Poll{Timeout: 90 * time.Second, Every: 500 * time.Millisecond}.EventuallyNil(t, "every stored command applied once", func() error {
		for _, ent := range ents {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := cl.Get(ctx, &pb.GetRequest{Address: &pb.Address{Tenant: "t", Workspace: "shop", ActorType: "counter", EntityId: ent}})
			cancel()
			if err != nil {
				return err
			}
			var s struct{ Value int64 }
			if resp.GetFound() {
				if err := json.Unmarshal(resp.GetState(), &s); err != nil {
					return err
				}
			}
			if s.Value > want[ent] {
				t.Fatalf("counter %s is %d, more than the %d commands stored: a command applied twice", ent, s.Value, want[ent])
			}
			if s.Value != want[ent] {
				return fmt.Errorf("counter %s is %d of %d", ent, s.Value, want[ent])
			}
		}
		return nil
	})
	testkit.Poll{Timeout: 30 * time.Second, Every: 250 * time.Millisecond}.EventuallyNil(t, "every message purged", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream.IngressStream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d messages left in %s", info.State.Msgs, stream.IngressStream)
		}
		return nil
	})
}
