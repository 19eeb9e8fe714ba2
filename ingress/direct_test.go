package ingress_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/testkit"
)

// runSaga stocks an inventory, funds a payment account and places an order
// through them on e's node, and waits until the order completed: three hops
// of actors' Sends across shards.
func runSaga(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	at := func(typ, id string) actor.Address {
		return actor.Address{Tenant: "t", Workspace: "w", ActorType: typ, EntityID: id}
	}
	submit := func(addr actor.Address, verb string, payload any) {
		t.Helper()
		data, err := json.Marshal(payload)
		if err != nil {
			t.Fatal(err)
		}
		key := addr.ActorType + "-" + verb
		res, err := e.node.Submit(ctx, actor.Command{ID: key, Type: actor.CommandType(addr.ActorType, verb), Address: addr,
			Payload: data, IdempotencyKey: key, Security: producer})
		if err != nil || res.Status != actor.StatusAccepted {
			t.Fatalf("%s %s: %+v %v", verb, addr.ActorType, res, err)
		}
	}
	submit(at(builtin.InventoryType, "wh1"), "stock", map[string]any{"sku": "apple", "qty": 10})
	submit(at(builtin.PaymentType, "acct1"), "deposit", map[string]any{"amount": 10_000})
	submit(at(builtin.OrderType, "o1"), "place", builtin.OrderPlace{SKU: "apple", Qty: 2, Amount: 1500, Inventory: "wh1", Payment: "acct1"})
	testkit.Poll{Timeout: 60 * time.Second, Every: 100 * time.Millisecond}.Eventually(t, "the order completed", func() (bool, string) {
		ent, _, err := e.node.Get(ctx, at(builtin.OrderType, "o1"), false)
		if err != nil {
			return false, err.Error()
		}
		var st builtin.OrderState
		if len(ent.State) > 0 {
			if err := json.Unmarshal(ent.State, &st); err != nil {
				return false, err.Error()
			}
		}
		return st.Status == builtin.OrderStatusCompleted, fmt.Sprintf("order %q", st.Status)
	})
}

// A saga's hops are Sends the relay submits to their target's shard leader:
// none of them is written to the ingress stream, delivered, acked and
// removed from it on the way. With the stream path asked for
// (--stream-sends), every hop goes through the stream, as before.
func TestRelay_SendsGoToTheirTargetsLeaderNotThroughTheStream(t *testing.T) {
	t.Run("direct", func(t *testing.T) {
		e := startEnv(t, 4, nil)
		runSaga(t, e)
		if seq := e.streamInfo(t, stream.IngressStream).State.LastSeq; seq != 0 {
			t.Fatalf("the ingress stream took %d messages; the saga's Sends should have gone to their targets directly", seq)
		}
	})
	t.Run("stream-sends", func(t *testing.T) {
		e := startEnv(t, 4, func(c *ingress.Config) { c.Submit = nil })
		runSaga(t, e)
		if seq := e.streamInfo(t, stream.IngressStream).State.LastSeq; seq < 3 {
			t.Fatalf("the ingress stream took %d messages; a saga of three hops publishes at least 3", seq)
		}
	})
}
