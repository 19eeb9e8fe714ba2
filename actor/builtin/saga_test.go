package builtin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/storage"
)

// ---- Decisions of each saga actor, through the harness (no engine) ----

// sagaStep is one command to one saga actor and everything it must produce.
type sagaStep struct {
	verb, payload string
	code, msg     string   // a rejection: its code ("invalid" for Invalid) and a substring of its message
	events        []string // "name payload", exactly
	sends         []string // "type tenant/workspace/type/id payload", exactly
	state         string   // if set, the exact state after the step
}

// replySender is the actor an order's reply comes from: the inventory or
// payment its payload names, as the saga sends it.
func replySender(verb, payload string) *actor.Address {
	var p struct{ Inventory, Payment *string }
	if json.Unmarshal([]byte(payload), &p) != nil {
		return nil
	}
	switch verb {
	case "reserved", "reservation_failed", "released":
		if p.Inventory != nil && actor.ValidateID("id", *p.Inventory) == nil {
			return &actor.Address{ActorType: InventoryType, EntityID: *p.Inventory}
		}
	case "charged", "charge_declined":
		if p.Payment != nil && actor.ValidateID("id", *p.Payment) == nil {
			return &actor.Address{ActorType: PaymentType, EntityID: *p.Payment}
		}
	}
	return nil
}

func runSaga(t *testing.T, mk func() actor.Behavior, id string, steps []sagaStep) {
	t.Helper()
	e := newEntity(mk())
	e.addr.EntityID = id
	e.sender = replySender
	for i, st := range steps {
		where := fmt.Sprintf("step %d (%s %s)", i, st.verb, st.payload)
		out := e.exec(t, int64(1000+i), st.verb, st.payload)
		if st.code != "" {
			r, ok := actor.AsRejection(out.err)
			if !ok || r.Code != st.code || !strings.Contains(r.Message, st.msg) || st.msg == "" {
				t.Fatalf("%s: want rejection %q containing %q, got %v", where, st.code, st.msg, out.err)
			}
			if want := map[bool]actor.Reason{true: actor.ReasonInvalid, false: actor.ReasonBusiness}[st.code == "invalid"]; r.Reason != want {
				t.Errorf("%s: reason %v, want %v", where, r.Reason, want)
			}
		} else if out.err != nil {
			t.Fatalf("%s: unexpected rejection %v", where, out.err)
		}
		if got, want := fmtEvents(out.events), strings.Join(st.events, "\n"); got != want {
			t.Errorf("%s: events\n got: %s\nwant: %s", where, got, want)
		}
		if got, want := fmtSends(out.sends), strings.Join(st.sends, "\n"); got != want {
			t.Errorf("%s: sends\n got: %s\nwant: %s", where, got, want)
		}
		if len(out.timers) != 0 || out.reply != nil {
			t.Errorf("%s: unexpected timers %v or reply %q", where, out.timers, out.reply)
		}
		if st.state != "" && string(e.state) != st.state {
			t.Errorf("%s: state\n got: %s\nwant: %s", where, e.state, st.state)
		}
	}
	if got := e.replay(t); len(e.log) > 0 && !bytes.Equal(got, e.state) {
		t.Errorf("replaying the log gives %s, want %s", got, e.state)
	}
}

func fmtSends(sends []actor.Send) string {
	s := make([]string, len(sends))
	for i, sd := range sends {
		s[i] = sd.Type + " " + sd.To.String() + " " + string(sd.Payload)
	}
	return strings.Join(s, "\n")
}

const (
	placeO1    = `{"sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1"}`
	placedO1   = `{"status":"placed","sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1"}`
	reservedO1 = `{"inventory":"wh1","sku":"apple","qty":2}`
	sendRes    = `cmd.inventory.reserve t/w/inventory/wh1 {"order":"o1","sku":"apple","qty":2}`
	sendCharge = `cmd.payment.charge t/w/payment/acct1 {"order":"o1","amount":1500}`
	sendCommit = `cmd.inventory.commit t/w/inventory/wh1 {"order":"o1"}`
	sendRel    = `cmd.inventory.release t/w/inventory/wh1 {"order":"o1"}`
	declinedO1 = `{"payment":"acct1","amount":1500,"reason":"insufficient funds"}`
)

func TestOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []sagaStep
	}{
		{"completed; repeated and late replies change nothing", []sagaStep{
			{verb: "place", payload: placeO1, events: []string{"placed " + `{"sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1"}`},
				sends: []string{sendRes}, state: placedO1},
			{verb: "reserved", payload: reservedO1, events: []string{"reserved " + reservedO1}, sends: []string{sendCharge},
				state: strings.Replace(placedO1, "placed", "reserved", 1)},
			{verb: "reserved", payload: reservedO1},
			{verb: "charged", payload: `{"payment":"acct1","amount":1500}`, events: []string{`completed {"payment":"acct1","amount":1500}`},
				sends: []string{sendCommit}, state: strings.Replace(placedO1, "placed", "completed", 1)},
			{verb: "charged", payload: `{"payment":"acct1","amount":1500}`},
			{verb: "reserved", payload: reservedO1, state: strings.Replace(placedO1, "placed", "completed", 1)},
			{verb: "charge_declined", payload: declinedO1, code: "wrong_status",
				msg: "cmd.order.charge_declined arrived while the order is completed; it is expected only while it is reserved"},
			{verb: "released", payload: reservedO1, code: "wrong_status", msg: "while the order is completed"},
			{verb: "place", payload: placeO1, code: "already_placed", msg: "order is already completed (2 x apple for 1500)"},
		}},
		{"payment declined: release, then cancelled", []sagaStep{
			{verb: "place", payload: placeO1, events: []string{"placed " + `{"sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1"}`}, sends: []string{sendRes}},
			{verb: "reserved", payload: reservedO1, events: []string{"reserved " + reservedO1}, sends: []string{sendCharge}},
			{verb: "charge_declined", payload: declinedO1, events: []string{`payment_failed {"reason":"insufficient funds"}`}, sends: []string{sendRel},
				state: `{"status":"payment_failed","sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1","reason":"insufficient funds"}`},
			{verb: "charge_declined", payload: declinedO1},
			{verb: "charged", payload: `{"payment":"acct1","amount":1500}`, code: "wrong_status", msg: "while the order is payment_failed"},
			{verb: "released", payload: reservedO1, events: []string{`cancelled {"reason":"insufficient funds"}`},
				state: `{"status":"cancelled","sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1","reason":"insufficient funds"}`},
			{verb: "released", payload: reservedO1},
			{verb: "charge_declined", payload: declinedO1},
			{verb: "reserved", payload: reservedO1},
			{verb: "reservation_failed", payload: `{"inventory":"wh1","reason":"x"}`, code: "wrong_status", msg: "while the order is cancelled"},
		}},
		{"reservation failed", []sagaStep{
			{verb: "place", payload: placeO1, events: []string{"placed " + `{"sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1"}`}, sends: []string{sendRes}},
			{verb: "reservation_failed", payload: `{"inventory":"wh1","reason":"out of apples"}`, events: []string{`failed {"reason":"out of apples"}`},
				state: `{"status":"failed","sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1","reason":"out of apples"}`},
			{verb: "reservation_failed", payload: `{"inventory":"wh1","reason":"out of apples"}`},
			{verb: "reserved", payload: reservedO1, code: "wrong_status", msg: "cmd.order.reserved arrived while the order is failed; it is expected only while it is placed"},
			{verb: "charged", payload: `{"payment":"acct1","amount":1500}`, code: "wrong_status", msg: "while the order is failed"},
		}},
		{"replies before the order exists", []sagaStep{
			{verb: "reserved", payload: reservedO1, code: "not_placed", msg: "cmd.order.reserved for an order that was never placed"},
			{verb: "reservation_failed", payload: `{"inventory":"wh1","reason":"x"}`, code: "not_placed", msg: "never placed"},
			{verb: "charged", payload: `{"payment":"acct1","amount":1500}`, code: "not_placed", msg: "never placed"},
			{verb: "charge_declined", payload: declinedO1, code: "not_placed", msg: "never placed"},
			{verb: "released", payload: reservedO1, code: "not_placed", msg: "never placed"},
		}},
		{"replies out of order", []sagaStep{
			{verb: "place", payload: placeO1, events: []string{"placed " + `{"sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1"}`}, sends: []string{sendRes}},
			{verb: "charged", payload: `{"payment":"acct1","amount":1500}`, code: "wrong_status", msg: "cmd.order.charged arrived while the order is placed; it is expected only while it is reserved"},
			{verb: "charge_declined", payload: declinedO1, code: "wrong_status", msg: "while the order is placed"},
			{verb: "released", payload: reservedO1, code: "wrong_status", msg: "expected only while it is payment_failed"},
		}},
		{"replies about something else", []sagaStep{
			{verb: "place", payload: placeO1, events: []string{"placed " + `{"sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1"}`}, sends: []string{sendRes}},
			{verb: "reserved", payload: `{"inventory":"wh2","sku":"apple","qty":2}`, code: "unexpected_reply", msg: `reply from inventory "wh2", but the order reserves at "wh1"`},
			{verb: "reserved", payload: `{"inventory":"wh1","sku":"pear","qty":2}`, code: "unexpected_reply", msg: "reply is about 2 x pear, but the order is for 2 x apple"},
			{verb: "reserved", payload: `{"inventory":"wh1","sku":"apple","qty":3}`, code: "unexpected_reply", msg: "about 3 x apple"},
			{verb: "reservation_failed", payload: `{"inventory":"wh2","reason":"x"}`, code: "unexpected_reply", msg: `inventory "wh2"`},
			{verb: "reserved", payload: reservedO1, events: []string{"reserved " + reservedO1}, sends: []string{sendCharge}},
			{verb: "charged", payload: `{"payment":"acct2","amount":1500}`, code: "unexpected_reply", msg: `reply from payment "acct2", but the order is charged at "acct1"`},
			{verb: "charged", payload: `{"payment":"acct1","amount":1499}`, code: "unexpected_reply", msg: "reply is about amount 1499, but the order's amount is 1500"},
			{verb: "charge_declined", payload: `{"payment":"acct1","amount":1,"reason":"r"}`, code: "unexpected_reply", msg: "amount 1,"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { runSaga(t, Order, "o1", tc.steps) })
	}
}

func TestInventory(t *testing.T) {
	runSaga(t, Inventory, "wh1", []sagaStep{
		{verb: "stock", payload: `{"sku":"apple","qty":10}`, events: []string{`stocked {"sku":"apple","qty":10,"available":10}`},
			state: `{"skus":{"apple":{"available":10,"held":0}}}`},
		{verb: "reserve", payload: `{"order":"o1","sku":"apple","qty":4}`,
			events: []string{`reserved {"order":"o1","sku":"apple","qty":4,"available":6}`},
			sends:  []string{`cmd.order.reserved t/w/order/o1 {"inventory":"wh1","sku":"apple","qty":4}`},
			state:  `{"skus":{"apple":{"available":6,"held":4}},"holds":{"o1":{"sku":"apple","qty":4}}}`},
		// Asked again by the same order for the same: confirmed again, nothing more held.
		{verb: "reserve", payload: `{"order":"o1","sku":"apple","qty":4}`,
			sends: []string{`cmd.order.reserved t/w/order/o1 {"inventory":"wh1","sku":"apple","qty":4}`},
			state: `{"skus":{"apple":{"available":6,"held":4}},"holds":{"o1":{"sku":"apple","qty":4}}}`},
		{verb: "reserve", payload: `{"order":"o1","sku":"apple","qty":5}`, code: "hold_mismatch", msg: `order "o1" already holds 4 x apple, not 5 x apple`},
		{verb: "reserve", payload: `{"order":"o2","sku":"apple","qty":7}`,
			events: []string{`reservation_rejected {"order":"o2","sku":"apple","qty":7,"available":6,"reason":"insufficient stock of apple at wh1: 6 available, 7 requested"}`},
			sends:  []string{`cmd.order.reservation_failed t/w/order/o2 {"inventory":"wh1","reason":"insufficient stock of apple at wh1: 6 available, 7 requested"}`},
			state:  `{"skus":{"apple":{"available":6,"held":4}},"holds":{"o1":{"sku":"apple","qty":4}}}`},
		{verb: "reserve", payload: `{"order":"o3","sku":"pear","qty":1}`,
			events: []string{`reservation_rejected {"order":"o3","sku":"pear","qty":1,"available":0,"reason":"insufficient stock of pear at wh1: 0 available, 1 requested"}`},
			sends:  []string{`cmd.order.reservation_failed t/w/order/o3 {"inventory":"wh1","reason":"insufficient stock of pear at wh1: 0 available, 1 requested"}`}},
		{verb: "reserve", payload: `{"order":"o4","sku":"apple","qty":6}`,
			events: []string{`reserved {"order":"o4","sku":"apple","qty":6,"available":0}`},
			sends:  []string{`cmd.order.reserved t/w/order/o4 {"inventory":"wh1","sku":"apple","qty":6}`},
			state:  `{"skus":{"apple":{"available":0,"held":10}},"holds":{"o1":{"sku":"apple","qty":4},"o4":{"sku":"apple","qty":6}}}`},
		// Compensation returns the units; completion consumes them.
		{verb: "release", payload: `{"order":"o1"}`,
			events: []string{`released {"order":"o1","sku":"apple","qty":4,"available":4}`},
			sends:  []string{`cmd.order.released t/w/order/o1 {"inventory":"wh1","sku":"apple","qty":4}`},
			state:  `{"skus":{"apple":{"available":4,"held":6}},"holds":{"o4":{"sku":"apple","qty":6}}}`},
		{verb: "release", payload: `{"order":"o1"}`, code: "no_hold", msg: `no reservation is held for order "o1"`},
		{verb: "commit", payload: `{"order":"o4"}`, events: []string{`committed {"order":"o4","sku":"apple","qty":6,"available":4}`},
			state: `{"skus":{"apple":{"available":4,"held":0}}}`},
		{verb: "commit", payload: `{"order":"o4"}`, code: "no_hold", msg: `order "o4"`},
		{verb: "release", payload: `{"order":"o4"}`, code: "no_hold", msg: `order "o4"`},
		{verb: "stock", payload: `{"sku":"pear","qty":9223372036854775807}`,
			events: []string{`stocked {"sku":"pear","qty":9223372036854775807,"available":9223372036854775807}`}},
		{verb: "stock", payload: `{"sku":"pear","qty":1}`, code: "overflow", msg: "adding 1 to pear (9223372036854775807 available, 0 held) exceeds the maximum"},
		{verb: "reserve", payload: `{"order":"o5","sku":"pear","qty":5}`, events: []string{`reserved {"order":"o5","sku":"pear","qty":5,"available":9223372036854775802}`},
			sends: []string{`cmd.order.reserved t/w/order/o5 {"inventory":"wh1","sku":"pear","qty":5}`}},
		// Held units come back on release, so they count against the maximum.
		{verb: "stock", payload: `{"sku":"pear","qty":1}`, code: "overflow", msg: "(9223372036854775802 available, 5 held)"},
	})
}

func TestPayment(t *testing.T) {
	runSaga(t, Payment, "acct1", []sagaStep{
		{verb: "charge", payload: `{"order":"o1","amount":1}`,
			events: []string{`declined {"order":"o1","amount":1,"balance":0,"reason":"insufficient funds at acct1: balance 0 is less than the amount 1"}`},
			sends:  []string{`cmd.order.charge_declined t/w/order/o1 {"payment":"acct1","amount":1,"reason":"insufficient funds at acct1: balance 0 is less than the amount 1"}`},
			state:  `{"balance":0}`},
		{verb: "deposit", payload: `{"amount":2000}`, events: []string{`deposited {"amount":2000,"balance":2000}`}, state: `{"balance":2000}`},
		{verb: "charge", payload: `{"order":"o1","amount":1500}`,
			events: []string{`charged {"order":"o1","amount":1500,"balance":500}`},
			sends:  []string{`cmd.order.charged t/w/order/o1 {"payment":"acct1","amount":1500}`},
			state:  `{"balance":500}`},
		{verb: "charge", payload: `{"order":"o2","amount":501}`,
			events: []string{`declined {"order":"o2","amount":501,"balance":500,"reason":"insufficient funds at acct1: balance 500 is less than the amount 501"}`},
			sends:  []string{`cmd.order.charge_declined t/w/order/o2 {"payment":"acct1","amount":501,"reason":"insufficient funds at acct1: balance 500 is less than the amount 501"}`},
			state:  `{"balance":500}`},
		{verb: "charge", payload: `{"order":"o3","amount":500}`, events: []string{`charged {"order":"o3","amount":500,"balance":0}`},
			sends: []string{`cmd.order.charged t/w/order/o3 {"payment":"acct1","amount":500}`}, state: `{"balance":0}`},
		{verb: "deposit", payload: `{"amount":9223372036854775807}`, events: []string{`deposited {"amount":9223372036854775807,"balance":9223372036854775807}`}},
		{verb: "deposit", payload: `{"amount":1}`, code: "overflow", msg: "depositing 1 onto balance 9223372036854775807 exceeds the maximum balance"},
	})
}

func TestSagaInvalid(t *testing.T) {
	for _, tc := range []struct {
		mk            func() actor.Behavior
		verb, payload string
		msg           string
	}{
		{Order, "place", ``, `cmd.order.place needs a JSON object payload like {"sku": "apple", "qty": 2, "amount": 1500, "inventory": "wh1", "payment": "acct1"}`},
		{Order, "place", `{"qty":2,"amount":1,"inventory":"wh1","payment":"p"}`, `sku is required: the stock keeping unit, e.g. {"sku"`},
		{Order, "place", `{"sku":"","qty":2,"amount":1,"inventory":"wh1","payment":"p"}`, `sku is required`},
		{Order, "place", `{"sku":"a b","qty":2,"amount":1,"inventory":"wh1","payment":"p"}`, `sku "a b" has character ' ' at 1`},
		{Order, "place", `{"sku":"a","amount":1,"inventory":"wh1","payment":"p"}`, `qty is required: units to order, a positive integer`},
		{Order, "place", `{"sku":"a","qty":0,"amount":1,"inventory":"wh1","payment":"p"}`, `qty must be a positive integer (units to order), got 0`},
		{Order, "place", `{"sku":"a","qty":1.5,"amount":1,"inventory":"wh1","payment":"p"}`, `qty must be an integer`},
		{Order, "place", `{"sku":"a","qty":1,"amount":-5,"inventory":"wh1","payment":"p"}`, `amount must be a positive integer (minor units to charge), got -5`},
		{Order, "place", `{"sku":"a","qty":1,"amount":5,"payment":"p"}`, `inventory is required: the entity id of the inventory to reserve at`},
		{Order, "place", `{"sku":"a","qty":1,"amount":5,"inventory":"w/1","payment":"p"}`, `inventory "w/1" has character '/'`},
		{Order, "place", `{"sku":"a","qty":1,"amount":5,"inventory":"wh1"}`, `payment is required: the entity id of the payment to charge`},
		{Order, "place", `{"sku":"a","qty":1,"amount":5,"inventory":"wh1","payment":"p","payment_account":"x"}`,
			`unknown field "payment_account"; cmd.order.place accepts only "sku", "qty", "amount", "inventory", "payment"`},
		{Order, "reserved", `{"inventory":"wh1","sku":"a"}`, `qty is required: units held`},
		{Order, "released", `{"sku":"a","qty":1}`, `inventory is required: the entity id of the inventory that replies`},
		{Order, "reservation_failed", `{"inventory":"wh1"}`, `reason is required: a non-empty string saying why`},
		{Order, "reservation_failed", `{"inventory":"wh1","reason":""}`, `reason is required`},
		{Order, "reservation_failed", `{"inventory":"wh1","reason":"` + strings.Repeat("x", MaxReasonLen+1) + `"}`, `reason is 513 bytes; the limit is 512`},
		{Order, "charged", `{"payment":"p"}`, `amount is required: minor units charged`},
		{Order, "charge_declined", `{"payment":"p","amount":1}`, `reason is required`},
		{Order, "cancel", `{}`, `actor type "order" has no verb "cancel"; verbs: [charge_declined charged place released reservation_failed reserved]`},
		{Inventory, "stock", `{"sku":"a"}`, `qty is required: units to add`},
		{Inventory, "stock", `{"sku":"a","qty":-1}`, `qty must be a positive integer (units to add), got -1`},
		{Inventory, "reserve", `{"sku":"a","qty":1}`, `order is required: the entity id of the order to reply to, e.g. {"order": "o1", "sku": "apple", "qty": 2}`},
		{Inventory, "reserve", `{"order":"o1","sku":"a","qty":0}`, `qty must be a positive integer (units to hold), got 0`},
		{Inventory, "release", `{}`, `order is required: the entity id of the order whose hold this is`},
		{Inventory, "commit", `{"order":"o1","qty":1}`, `unknown field "qty"; cmd.inventory.commit accepts only "order"`},
		{Inventory, "count", `{}`, `actor type "inventory" has no verb "count"; verbs: [commit release reserve stock]`},
		{Payment, "deposit", `{"amount":0}`, `amount must be a positive integer (minor units), got 0`},
		{Payment, "charge", `{"amount":1}`, `order is required: the entity id of the order to reply to`},
		{Payment, "charge", `{"order":"o1","amount":"1"}`, `amount must be an integer`},
		{Payment, "charge", `{"order":"o1"}`, `amount is required: minor units, a positive integer`},
		{Payment, "refund", `{}`, `actor type "payment" has no verb "refund"; verbs: [charge deposit]`},
	} {
		t.Run(tc.verb+" "+short(tc.payload), func(t *testing.T) {
			runSaga(t, tc.mk, "e1", []sagaStep{{verb: tc.verb, payload: tc.payload, code: "invalid", msg: tc.msg}})
		})
	}
}

func TestSagaEvolveRefusesMalformedEvents(t *testing.T) {
	for _, tc := range []struct {
		b    actor.Behavior
		name string
	}{
		{Order(), "placed"}, {Order(), "reserved"}, {Order(), "completed"}, {Order(), "failed"}, {Order(), "cancelled"},
		{Inventory(), "stocked"}, {Inventory(), "reserved"}, {Inventory(), "reservation_rejected"}, {Inventory(), "released"},
		{Inventory(), "committed"}, {Payment(), "deposited"}, {Payment(), "charged"}, {Payment(), "declined"},
	} {
		for _, p := range []string{``, `[`, `{"x":`, `"s"`} {
			ev := &actor.Event{Type: actor.EventType(tc.b.Type(), tc.name), Payload: []byte(p)}
			if s, err := tc.b.Evolve(nil, ev); err == nil {
				t.Errorf("%s %s: Evolve accepted payload %q, state %s", tc.b.Type(), tc.name, p, s)
			}
		}
	}
}

// ---- The whole saga through the real engine on Badger ----

// sagaRig runs each actor type on its own shard of one Badger database, so
// every step crosses shards, and delivers Sends the way a relay would: it
// reads the outbox rows each shard wrote and applies each command on its
// target shard in an entry of its own.
type sagaRig struct {
	t      *testing.T
	shards map[string]*sagaShard // by actor type
	order  []string              // actor types in a fixed order, for the pump
	at     int64
	// delivered is every Send the pump delivered, in order.
	delivered []actor.Command
}

type sagaShard struct {
	store   *storage.ShardStore
	eng     *engine.Engine
	index   uint64
	relayed engine.Position // outbox rows up to here were delivered
}

func newSagaRig(t *testing.T) *sagaRig {
	t.Helper()
	db, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &sagaRig{t: t, shards: map[string]*sagaShard{}, order: []string{OrderType, InventoryType, PaymentType}, at: 1_700_000_000_000}
	for i, typ := range r.order {
		st := db.Shard(uint32(10 + i))
		eng, err := engine.New(uint32(10+i), Registry(), st)
		if err != nil {
			t.Fatal(err)
		}
		r.shards[typ] = &sagaShard{store: st, eng: eng}
	}
	return r
}

var sagaUser = actor.Security{Principal: actor.Principal{ID: "alice", Type: actor.PrincipalUser},
	Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}

func sagaAddr(typ, id string) actor.Address {
	return actor.Address{Tenant: "t", Workspace: "w", ActorType: typ, EntityID: id}
}

// apply runs cmd in an entry of its own on the shard of its actor type.
func (r *sagaRig) apply(cmd actor.Command) actor.Result {
	r.t.Helper()
	sh := r.shards[cmd.Address.ActorType]
	sh.index++
	r.at++
	out, err := sh.eng.Apply(&engine.Entry{Index: sh.index, At: r.at, Commands: []actor.Command{cmd}})
	if err != nil {
		r.t.Fatalf("apply %s: %v", cmd.Type, err)
	}
	return out.Results[0]
}

// submit sends a user command and requires it accepted.
func (r *sagaRig) submit(a actor.Address, verb, key, correlation, payload string) actor.Result {
	r.t.Helper()
	res := r.apply(actor.Command{ID: "cmd-" + key, Type: actor.CommandType(a.ActorType, verb), Address: a,
		Payload: []byte(payload), IdempotencyKey: key, Security: sagaUser, CorrelationID: correlation})
	if res.Status != actor.StatusAccepted {
		r.t.Fatalf("%s %s: %+v", verb, payload, res)
	}
	return res
}

// outboxCommands returns the Sends the shard wrote since the last call.
func (r *sagaRig) outboxCommands(sh *sagaShard) []actor.Command {
	r.t.Helper()
	rows, err := sh.store.Outbox(sh.relayed, 10_000)
	if err != nil {
		r.t.Fatal(err)
	}
	var cmds []actor.Command
	for _, row := range rows {
		sh.relayed = row.Pos
		if len(row.Data) == 0 || row.Data[0] != engine.OutboxCommand {
			continue // an event for the relay to publish; nothing to deliver
		}
		var c pb.Command
		if err := proto.Unmarshal(row.Data[1:], &c); err != nil {
			r.t.Fatalf("outbox row %+v: %v", row.Pos, err)
		}
		cmds = append(cmds, c.ToActor())
	}
	return cmds
}

// pump delivers Sends until none is left, in the order they were written
// (shards visited in a fixed order). With twice, every command is delivered
// a second time right after the first, as an at-least-once transport may: the
// second must be a duplicate that changes nothing.
func (r *sagaRig) pump(twice bool) {
	r.t.Helper()
	for round := 0; ; round++ {
		if round > 20 {
			r.t.Fatal("the saga does not settle")
		}
		var queue []actor.Command
		for _, typ := range r.order {
			queue = append(queue, r.outboxCommands(r.shards[typ])...)
		}
		if len(queue) == 0 {
			return
		}
		for _, c := range queue {
			r.deliver(c, twice)
		}
	}
}

func (r *sagaRig) deliver(c actor.Command, twice bool) {
	r.t.Helper()
	if c.IdempotencyKey == "" || c.CorrelationID == "" || c.CausationID == "" {
		r.t.Fatalf("outbox command without idempotency key, correlation or causation: %+v", c)
	}
	if err := c.Validate(); err != nil {
		r.t.Fatalf("outbox command %s is not a valid command: %v", c.Type, err)
	}
	r.delivered = append(r.delivered, c)
	res := r.apply(c)
	if res.Status != actor.StatusAccepted || res.Duplicate || res.Replay {
		r.t.Fatalf("delivering %s to %s: %+v", c.Type, c.Address, res)
	}
	if twice {
		r.redeliver(c, res)
	}
}

// redeliver applies c again and requires the original result back, with no
// new event and no new Send.
func (r *sagaRig) redeliver(c actor.Command, first actor.Result) {
	r.t.Helper()
	sh := r.shards[c.Address.ActorType]
	before, err := sh.store.Entity(c.Address)
	if err != nil {
		r.t.Fatal(err)
	}
	pending := r.pendingRows(sh)
	res := r.apply(c)
	if !res.Replay || res.Duplicate || res.Status != first.Status || res.Version != first.Version || len(res.Events) != len(first.Events) {
		r.t.Fatalf("redelivered %s to %s: %+v, first %+v", c.Type, c.Address, res, first)
	}
	after, err := sh.store.Entity(c.Address)
	if err != nil {
		r.t.Fatal(err)
	}
	if after.Version != before.Version || !bytes.Equal(after.State, before.State) {
		r.t.Fatalf("redelivered %s changed %s: v%d %s -> v%d %s", c.Type, c.Address, before.Version, before.State, after.Version, after.State)
	}
	if n := r.pendingRows(sh); n != pending {
		r.t.Fatalf("redelivered %s to %s wrote %d outbox rows", c.Type, c.Address, n-pending)
	}
}

// pendingRows counts the shard's outbox rows not delivered yet.
func (r *sagaRig) pendingRows(sh *sagaShard) int {
	r.t.Helper()
	rows, err := sh.store.Outbox(sh.relayed, 10_000)
	if err != nil {
		r.t.Fatal(err)
	}
	return len(rows)
}

// state decodes the entity's stored state into v.
func (r *sagaRig) state(a actor.Address, v any) uint64 {
	r.t.Helper()
	ent, err := r.shards[a.ActorType].store.Entity(a)
	if err != nil {
		r.t.Fatal(err)
	}
	if len(ent.State) > 0 {
		if err := json.Unmarshal(ent.State, v); err != nil {
			r.t.Fatal(err)
		}
	}
	return ent.Version
}

// events returns the entity's events, in order, and fails the test if its
// history holds a rejection: no step of a saga is refused.
func (r *sagaRig) events(a actor.Address) []actor.Event {
	r.t.Helper()
	recs, _, _, err := r.shards[a.ActorType].store.History(a, engine.Position{}, 1000, true)
	if err != nil {
		r.t.Fatal(err)
	}
	evs := make([]actor.Event, len(recs))
	for i, rec := range recs {
		if rec.Kind != engine.HistoryEvent {
			var rj pb.Rejection
			_ = proto.Unmarshal(rec.Data, &rj)
			r.t.Fatalf("%s history holds a rejection: %v", a, &rj)
		}
		var e pb.Event
		if err := proto.Unmarshal(rec.Data, &e); err != nil {
			r.t.Fatal(err)
		}
		evs[i] = e.ToActor()
	}
	return evs
}

// flow checks the entity's event names (after skip setup events) and that
// each carries correlation.
func (r *sagaRig) flow(a actor.Address, skip int, correlation string, want ...string) {
	r.t.Helper()
	evs := r.events(a)
	if len(evs) < skip {
		r.t.Fatalf("%s has %d events, fewer than the %d of its setup", a, len(evs), skip)
	}
	var got []string
	for _, ev := range evs[skip:] {
		got = append(got, strings.TrimPrefix(ev.Type, "evt."+a.ActorType+"."))
		if ev.CorrelationID != correlation {
			r.t.Errorf("%s %s: correlation id %q, want %q", a, ev.Type, ev.CorrelationID, correlation)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		r.t.Errorf("%s events %v, want %v", a, got, want)
	}
}

// setup stocks wh1 with 10 apples and deposits balance into acct1.
func (r *sagaRig) setup(balance int64) (o, inv, pay actor.Address) {
	o, inv, pay = sagaAddr(OrderType, "o1"), sagaAddr(InventoryType, "wh1"), sagaAddr(PaymentType, "acct1")
	r.submit(inv, "stock", "stock-1", "", `{"sku":"apple","qty":10}`)
	r.submit(pay, "deposit", "dep-1", "", fmt.Sprintf(`{"amount":%d}`, balance))
	return o, inv, pay
}

func TestSagaEngine(t *testing.T) {
	for _, twice := range []bool{false, true} {
		t.Run(fmt.Sprintf("happy path, every send delivered twice=%v", twice), func(t *testing.T) {
			r := newSagaRig(t)
			o, inv, pay := r.setup(5000)
			r.submit(o, "place", "place-o1", "checkout-42", placeO1)
			r.pump(twice)

			var os OrderState
			r.state(o, &os)
			var is InventoryState
			r.state(inv, &is)
			var ps PaymentState
			r.state(pay, &ps)
			if os.Status != OrderStatusCompleted {
				t.Errorf("order %+v, want completed", os)
			}
			if got := is.SKUs["apple"]; got != (InventorySKU{Available: 8}) || len(is.Holds) != 0 {
				t.Errorf("inventory %+v, want 8 apples available, none held", is)
			}
			if ps.Balance != 3500 {
				t.Errorf("payment balance %d, want 3500", ps.Balance)
			}
			r.flow(o, 0, "checkout-42", "placed", "reserved", "completed")
			r.flow(inv, 1, "checkout-42", "reserved", "committed")
			r.flow(pay, 1, "checkout-42", "charged")
			if len(r.delivered) != 5 { // reserve, reserved, charge, charged, commit
				t.Errorf("delivered %d sends, want 5", len(r.delivered))
			}
			r.redeliverAll()
		})
	}

	t.Run("payment declined: the reservation is released", func(t *testing.T) {
		r := newSagaRig(t)
		o, inv, pay := r.setup(1000)
		place := r.submit(o, "place", "place-o1", "", placeO1)
		r.pump(true)

		var os OrderState
		r.state(o, &os)
		var is InventoryState
		r.state(inv, &is)
		var ps PaymentState
		r.state(pay, &ps)
		if os.Status != OrderStatusCancelled || !strings.Contains(os.Reason, "insufficient funds at acct1: balance 1000 is less than the amount 1500") {
			t.Errorf("order %+v, want cancelled for insufficient funds", os)
		}
		if got := is.SKUs["apple"]; got != (InventorySKU{Available: 10}) || len(is.Holds) != 0 {
			t.Errorf("inventory %+v, want all 10 apples back", is)
		}
		if ps.Balance != 1000 {
			t.Errorf("payment balance %d, want 1000 (unchanged)", ps.Balance)
		}
		// No correlation id given: the flow is correlated by the place command's id.
		r.flow(o, 0, place.CommandID, "placed", "reserved", "payment_failed", "cancelled")
		r.flow(inv, 1, place.CommandID, "reserved", "released")
		r.flow(pay, 1, place.CommandID, "declined")
		if len(r.delivered) != 6 { // reserve, reserved, charge, charge_declined, release, released
			t.Errorf("delivered %d sends, want 6", len(r.delivered))
		}
		r.redeliverAll()
	})

	t.Run("out of stock: the order fails, nobody is charged", func(t *testing.T) {
		r := newSagaRig(t)
		o, inv, pay := r.setup(5000)
		r.submit(o, "place", "place-o1", "c1", `{"sku":"apple","qty":11,"amount":1500,"inventory":"wh1","payment":"acct1"}`)
		r.pump(true)
		var os OrderState
		r.state(o, &os)
		if os.Status != OrderStatusFailed || os.Reason != "insufficient stock of apple at wh1: 10 available, 11 requested" {
			t.Errorf("order %+v, want failed for insufficient stock", os)
		}
		r.flow(o, 0, "c1", "placed", "failed")
		r.flow(inv, 1, "c1", "reservation_rejected")
		r.flow(pay, 1, "c1")
		r.redeliverAll()
	})

	t.Run("two replicas reach the same state hashes", func(t *testing.T) {
		var metas [2][]engine.Meta
		for i := range metas {
			r := newSagaRig(t)
			o, _, _ := r.setup(1000)
			r.submit(o, "place", "place-o1", "", placeO1)
			r.pump(true)
			for _, typ := range r.order {
				metas[i] = append(metas[i], r.shards[typ].eng.Meta())
			}
		}
		for i := range metas[0] {
			if metas[0][i] != metas[1][i] {
				t.Errorf("shard of %s: %+v vs %+v", []string{OrderType, InventoryType, PaymentType}[i], metas[0][i], metas[1][i])
			}
		}
	})

	t.Run("two orders race for the last units", func(t *testing.T) {
		r := newSagaRig(t)
		_, inv, pay := r.setup(5000)
		o2 := sagaAddr(OrderType, "o2")
		r.submit(sagaAddr(OrderType, "o1"), "place", "place-o1", "a", `{"sku":"apple","qty":6,"amount":100,"inventory":"wh1","payment":"acct1"}`)
		r.submit(o2, "place", "place-o2", "b", `{"sku":"apple","qty":6,"amount":100,"inventory":"wh1","payment":"acct1"}`)
		r.pump(false)
		var s1, s2 OrderState
		r.state(sagaAddr(OrderType, "o1"), &s1)
		r.state(o2, &s2)
		if s1.Status != OrderStatusCompleted || s2.Status != OrderStatusFailed {
			t.Errorf("o1 %s, o2 %s; want completed and failed", s1.Status, s2.Status)
		}
		var is InventoryState
		r.state(inv, &is)
		var ps PaymentState
		r.state(pay, &ps)
		if is.SKUs["apple"] != (InventorySKU{Available: 4}) || ps.Balance != 4900 {
			t.Errorf("inventory %+v, balance %d; want 4 apples left and 4900", is, ps.Balance)
		}
	})
}

// redeliverAll delivers every Send of the flow once more, after the flow has
// finished (a transport redelivering late): each is a replay, and no
// entity changes.
func (r *sagaRig) redeliverAll() {
	r.t.Helper()
	for _, c := range r.delivered {
		sh := r.shards[c.Address.ActorType]
		before, _ := sh.store.Entity(c.Address)
		res := r.apply(c)
		after, _ := sh.store.Entity(c.Address)
		if !res.Replay || res.Duplicate || after.Version != before.Version || !bytes.Equal(after.State, before.State) {
			r.t.Fatalf("late redelivery of %s to %s: %+v", c.Type, c.Address, res)
		}
	}
	for _, typ := range r.order {
		if cmds := r.outboxCommands(r.shards[typ]); len(cmds) != 0 {
			r.t.Fatalf("redeliveries on %s sent %d more commands", typ, len(cmds))
		}
	}
}

// A client that sends the inventory's and the payment's replies itself
// cannot complete an order nobody paid for: replies must come from the
// actors the order named, as the engine sends them.
func TestSagaForgedRepliesRefused(t *testing.T) {
	r := newSagaRig(t)
	o, _, pay := r.setup(5000)
	r.submit(o, "place", "place-o1", "", placeO1)
	forge := func(verb, key, payload string) actor.Result {
		return r.apply(actor.Command{ID: "forged-" + key, Type: actor.CommandType(OrderType, verb), Address: o,
			Payload: []byte(payload), IdempotencyKey: key, Security: sagaUser})
	}
	for _, f := range []struct{ verb, payload string }{
		{"reserved", reservedO1},
		{"charged", `{"payment":"acct1","amount":1500}`},
	} {
		res := forge(f.verb, "forged-"+f.verb, f.payload)
		if res.Status != actor.StatusRejected || res.Reason != actor.ReasonViolation || !strings.Contains(res.Message, "must be sent by") {
			t.Fatalf("forged %s: %+v (want a violation)", f.verb, res)
		}
	}
	var os OrderState
	r.state(o, &os)
	if os.Status != OrderStatusPlaced {
		t.Fatalf("order after forged replies: %+v, want still placed", os)
	}
	// The genuine flow still completes it, and only then is it paid.
	r.pump(false)
	r.state(o, &os)
	var ps PaymentState
	r.state(pay, &ps)
	if os.Status != OrderStatusCompleted || ps.Balance != 3500 {
		t.Fatalf("after the real replies: order %+v, balance %d", os, ps.Balance)
	}
}
