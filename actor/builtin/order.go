package builtin

import (
	"fmt"
	"slices"

	"github.com/rhizon/rhizon/actor"
)

// The statuses of an order, in the order the saga reaches them.
const (
	OrderStatusPlaced        = "placed"         // waiting for the inventory
	OrderStatusReserved      = "reserved"       // stock held, waiting for the payment
	OrderStatusCompleted     = "completed"      // charged; final
	OrderStatusFailed        = "failed"         // the inventory could not reserve; final
	OrderStatusPaymentFailed = "payment_failed" // charge declined, waiting for the release
	OrderStatusCancelled     = "cancelled"      // compensated: stock released; final
)

// OrderState is the state of an order. Status is "" until it is placed.
type OrderState struct {
	Status    string `json:"status,omitempty"`
	SKU       string `json:"sku,omitempty"`
	Qty       int64  `json:"qty,omitempty"`
	Amount    int64  `json:"amount,omitempty"`
	Inventory string `json:"inventory,omitempty"`
	Payment   string `json:"payment,omitempty"`
	Reason    string `json:"reason,omitempty"` // why it failed or was cancelled
}

// OrderPlace is the payload of cmd.order.place and of evt.order.placed.
// Inventory and Payment are entity ids of an inventory and a payment in the
// order's own tenant and workspace.
type OrderPlace struct {
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
	Amount    int64  `json:"amount"`
	Inventory string `json:"inventory"`
	Payment   string `json:"payment"`
}

// OrderReason is the payload of evt.order.failed, evt.order.payment_failed
// and evt.order.cancelled.
type OrderReason struct {
	Reason string `json:"reason"`
}

type orderPlacePayload struct {
	SKU       *string `json:"sku"`
	Qty       *int64  `json:"qty"`
	Amount    *int64  `json:"amount"`
	Inventory *string `json:"inventory"`
	Payment   *string `json:"payment"`
}

var (
	orderVerbs             = []string{"charge_declined", "charged", "place", "released", "reservation_failed", "reserved"}
	evtOrderPlaced         = actor.EventType(OrderType, "placed")
	evtOrderReserved       = actor.EventType(OrderType, "reserved")
	evtOrderFailed         = actor.EventType(OrderType, "failed")
	evtOrderCompleted      = actor.EventType(OrderType, "completed")
	evtOrderPaymentFailed  = actor.EventType(OrderType, "payment_failed")
	evtOrderCancelled      = actor.EventType(OrderType, "cancelled")
	cmdInventoryReserve    = actor.CommandType(InventoryType, "reserve")
	cmdInventoryRelease    = actor.CommandType(InventoryType, "release")
	cmdInventoryCommit     = actor.CommandType(InventoryType, "commit")
	cmdPaymentCharge       = actor.CommandType(PaymentType, "charge")
	cmdOrderReserved       = actor.CommandType(OrderType, "reserved")
	cmdOrderResFailed      = actor.CommandType(OrderType, "reservation_failed")
	cmdOrderReleased       = actor.CommandType(OrderType, "released")
	cmdOrderCharged        = actor.CommandType(OrderType, "charged")
	cmdOrderChargeDeclined = actor.CommandType(OrderType, "charge_declined")
)

// Order returns the order behaviour, the saga's initiator (see saga.go).
//
//	cmd.order.place {"sku", "qty", "amount", "inventory", "payment"}
//	  qty, amount positive int64; sku, inventory, payment ids
//	  -> evt.order.placed (the payload); Send cmd.inventory.reserve {"order": self, "sku", "qty"}
//	  rejects "already_placed"
//	cmd.order.reserved {"inventory", "sku", "qty"}          (from the inventory)
//	  placed -> evt.order.reserved (the payload); Send cmd.payment.charge {"order": self, "amount"}
//	cmd.order.reservation_failed {"inventory", "reason"}    (from the inventory)
//	  placed -> evt.order.failed {"reason"}
//	cmd.order.charged {"payment", "amount"}                 (from the payment)
//	  reserved -> evt.order.completed (the payload); Send cmd.inventory.commit {"order": self}
//	cmd.order.charge_declined {"payment", "amount", "reason"} (from the payment)
//	  reserved -> evt.order.payment_failed {"reason"}; Send cmd.inventory.release {"order": self}
//	cmd.order.released {"inventory", "sku", "qty"}          (from the inventory)
//	  payment_failed -> evt.order.cancelled {"reason": the payment's reason}
//
// A reply in a status its step already led past (a late or repeated reply) is
// accepted and changes nothing. Any reply before the order is placed rejects
// "not_placed"; one that contradicts the status (charged after a decline, say)
// rejects "wrong_status"; one naming another inventory or payment, sku, qty or
// amount than the order's rejects "unexpected_reply".
func Order() actor.Behavior {
	return actor.Define(actor.Definition[OrderState]{
		Name:     OrderType,
		Revision: Revision,
		Commands: map[string]actor.Handler[OrderState]{
			"place":              orderPlace,
			"reserved":           orderReservedReply,
			"reservation_failed": orderReservationFailedReply,
			"charged":            orderChargedReply,
			"charge_declined":    orderChargeDeclinedReply,
			"released":           orderReleasedReply,
		},
		Validate: validateOrder,
		Apply:    applyOrder,
	})
}

func validateOrder(cmd *actor.Command) error {
	var err error
	switch cmd.Verb() {
	case "place":
		_, err = parseOrderPlace(cmd)
	case "reserved", "released":
		_, err = parseOrderReservation(cmd)
	case "reservation_failed":
		_, err = parseOrderReservationFailed(cmd)
	case "charged":
		_, err = parseOrderCharge(cmd)
	case "charge_declined":
		_, err = parseOrderChargeDeclined(cmd)
	default:
		err = unknownVerb(OrderType, cmd, orderVerbs)
	}
	return err
}

func parseOrderPlace(cmd *actor.Command) (OrderPlace, error) {
	const example = `{"sku": "apple", "qty": 2, "amount": 1500, "inventory": "wh1", "payment": "acct1"}`
	var p orderPlacePayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return OrderPlace{}, err
	}
	var o OrderPlace
	var err error
	if o.SKU, err = needID("sku", p.SKU, "the stock keeping unit", example); err != nil {
		return OrderPlace{}, err
	}
	if o.Qty, err = needPositive("qty", p.Qty, "units to order", example); err != nil {
		return OrderPlace{}, err
	}
	if o.Amount, err = needPositive("amount", p.Amount, "minor units to charge", example); err != nil {
		return OrderPlace{}, err
	}
	if o.Inventory, err = needID("inventory", p.Inventory, "the entity id of the inventory to reserve at", example); err != nil {
		return OrderPlace{}, err
	}
	if o.Payment, err = needID("payment", p.Payment, "the entity id of the payment to charge", example); err != nil {
		return OrderPlace{}, err
	}
	return o, nil
}

func orderPlace(ctx *actor.Context, s *OrderState, cmd *actor.Command) ([]actor.NewEvent, error) {
	p, err := parseOrderPlace(cmd)
	if err != nil {
		return nil, err
	}
	if s.Status != "" {
		return nil, actor.Reject(actor.CodeAlreadyPlaced, "order is already %s (%d x %s for %d)", s.Status, s.Qty, s.SKU, s.Amount)
	}
	ctx.Send(actor.Address{ActorType: InventoryType, EntityID: p.Inventory}, cmdInventoryReserve,
		actor.MustJSON(InventoryReserve{Order: ctx.Address().EntityID, SKU: p.SKU, Qty: p.Qty}))
	return []actor.NewEvent{{Name: "placed", Payload: actor.MustJSON(p)}}, nil
}

// advance decides whether a reply moves the order on: true when the order is
// in status from; false (accept, record nothing) when it is already in one of
// the statuses the step leads to, so a repeated or late reply is harmless;
// otherwise a rejection.
func (s *OrderState) advance(cmd *actor.Command, from string, after ...string) (bool, error) {
	switch {
	case s.Status == from:
		return true, nil
	case s.Status == "":
		return false, actor.Reject(actor.CodeNotPlaced, "%s for an order that was never placed", cmd.Type)
	case slices.Contains(after, s.Status):
		return false, nil
	}
	return false, actor.Reject(actor.CodeWrongStatus, "%s arrived while the order is %s; it is expected only while it is %s", cmd.Type, s.Status, from)
}

// sentBy checks that a reply was sent by the actor at (typ, id) itself: a
// client naming that actor in the payload is refused as a violation (the
// engine records it in the offender's audit), so nobody can complete an
// order by forging the payment's or the inventory's reply.
func sentBy(ctx *actor.Context, cmd *actor.Command, typ, id string) error {
	if ctx.SentBy(actor.Address{ActorType: typ, EntityID: id}) {
		return nil
	}
	p := ctx.Principal()
	return &actor.Rejection{Reason: actor.ReasonViolation, Code: actor.CodeForgedReply, Message: fmt.Sprintf(
		"%s must be sent by %s %q; principal %s (%s) may not send it", cmd.Type, typ, id, p.ID, p.Type)}
}

// fromInventory checks that a reply comes from the order's own inventory.
func (s *OrderState) fromInventory(inv string) error {
	if s.Status != "" && inv != s.Inventory {
		return actor.Reject(actor.CodeUnexpectedReply, "reply from inventory %q, but the order reserves at %q", inv, s.Inventory)
	}
	return nil
}

// sameHold checks a reservation reply against what the order asked for.
func (s *OrderState) sameHold(r OrderReservation) error {
	if err := s.fromInventory(r.Inventory); err != nil {
		return err
	}
	if s.Status != "" && (r.SKU != s.SKU || r.Qty != s.Qty) {
		return actor.Reject(actor.CodeUnexpectedReply, "reply is about %d x %s, but the order is for %d x %s", r.Qty, r.SKU, s.Qty, s.SKU)
	}
	return nil
}

// fromPayment checks that a reply comes from the order's payment, for its amount.
func (s *OrderState) fromPayment(pay string, amount int64) error {
	if s.Status == "" {
		return nil
	}
	if pay != s.Payment {
		return actor.Reject(actor.CodeUnexpectedReply, "reply from payment %q, but the order is charged at %q", pay, s.Payment)
	}
	if amount != s.Amount {
		return actor.Reject(actor.CodeUnexpectedReply, "reply is about amount %d, but the order's amount is %d", amount, s.Amount)
	}
	return nil
}

func orderReservedReply(ctx *actor.Context, s *OrderState, cmd *actor.Command) ([]actor.NewEvent, error) {
	r, err := parseOrderReservation(cmd)
	if err != nil {
		return nil, err
	}
	if err := s.sameHold(r); err != nil {
		return nil, err
	}
	if err := sentBy(ctx, cmd, InventoryType, r.Inventory); err != nil {
		return nil, err
	}
	ok, err := s.advance(cmd, OrderStatusPlaced, OrderStatusReserved, OrderStatusCompleted, OrderStatusPaymentFailed, OrderStatusCancelled)
	if !ok {
		return nil, err
	}
	ctx.Send(actor.Address{ActorType: PaymentType, EntityID: s.Payment}, cmdPaymentCharge,
		actor.MustJSON(PaymentCharge{Order: ctx.Address().EntityID, Amount: s.Amount}))
	return []actor.NewEvent{{Name: "reserved", Payload: actor.MustJSON(r)}}, nil
}

func orderReservationFailedReply(ctx *actor.Context, s *OrderState, cmd *actor.Command) ([]actor.NewEvent, error) {
	r, err := parseOrderReservationFailed(cmd)
	if err != nil {
		return nil, err
	}
	if err := s.fromInventory(r.Inventory); err != nil {
		return nil, err
	}
	if err := sentBy(ctx, cmd, InventoryType, r.Inventory); err != nil {
		return nil, err
	}
	ok, err := s.advance(cmd, OrderStatusPlaced, OrderStatusFailed)
	if !ok {
		return nil, err
	}
	return []actor.NewEvent{{Name: "failed", Payload: actor.MustJSON(OrderReason{Reason: r.Reason})}}, nil
}

func orderChargedReply(ctx *actor.Context, s *OrderState, cmd *actor.Command) ([]actor.NewEvent, error) {
	r, err := parseOrderCharge(cmd)
	if err != nil {
		return nil, err
	}
	if err := s.fromPayment(r.Payment, r.Amount); err != nil {
		return nil, err
	}
	if err := sentBy(ctx, cmd, PaymentType, r.Payment); err != nil {
		return nil, err
	}
	ok, err := s.advance(cmd, OrderStatusReserved, OrderStatusCompleted)
	if !ok {
		return nil, err
	}
	// The hold has become a sale: let the inventory forget it.
	ctx.Send(actor.Address{ActorType: InventoryType, EntityID: s.Inventory}, cmdInventoryCommit,
		actor.MustJSON(InventoryOrderRef{Order: ctx.Address().EntityID}))
	return []actor.NewEvent{{Name: "completed", Payload: actor.MustJSON(r)}}, nil
}

func orderChargeDeclinedReply(ctx *actor.Context, s *OrderState, cmd *actor.Command) ([]actor.NewEvent, error) {
	r, err := parseOrderChargeDeclined(cmd)
	if err != nil {
		return nil, err
	}
	if err := s.fromPayment(r.Payment, r.Amount); err != nil {
		return nil, err
	}
	if err := sentBy(ctx, cmd, PaymentType, r.Payment); err != nil {
		return nil, err
	}
	ok, err := s.advance(cmd, OrderStatusReserved, OrderStatusPaymentFailed, OrderStatusCancelled)
	if !ok {
		return nil, err
	}
	// Compensate the step that succeeded: give the reserved stock back.
	ctx.Send(actor.Address{ActorType: InventoryType, EntityID: s.Inventory}, cmdInventoryRelease,
		actor.MustJSON(InventoryOrderRef{Order: ctx.Address().EntityID}))
	return []actor.NewEvent{{Name: "payment_failed", Payload: actor.MustJSON(OrderReason{Reason: r.Reason})}}, nil
}

func orderReleasedReply(ctx *actor.Context, s *OrderState, cmd *actor.Command) ([]actor.NewEvent, error) {
	r, err := parseOrderReservation(cmd)
	if err != nil {
		return nil, err
	}
	if err := s.sameHold(r); err != nil {
		return nil, err
	}
	if err := sentBy(ctx, cmd, InventoryType, r.Inventory); err != nil {
		return nil, err
	}
	ok, err := s.advance(cmd, OrderStatusPaymentFailed, OrderStatusCancelled)
	if !ok {
		return nil, err
	}
	return []actor.NewEvent{{Name: "cancelled", Payload: actor.MustJSON(OrderReason{Reason: s.Reason})}}, nil
}

func applyOrder(s *OrderState, ev *actor.Event) error {
	switch ev.Type {
	case evtOrderPlaced:
		var e OrderPlace
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		*s = OrderState{Status: OrderStatusPlaced, SKU: e.SKU, Qty: e.Qty, Amount: e.Amount, Inventory: e.Inventory, Payment: e.Payment}
		return nil
	case evtOrderReserved:
		var e OrderReservation
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Status = OrderStatusReserved
		return nil
	case evtOrderCompleted:
		var e OrderCharge
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Status = OrderStatusCompleted
		return nil
	case evtOrderFailed, evtOrderPaymentFailed, evtOrderCancelled:
		var e OrderReason
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Reason = e.Reason
		switch ev.Type {
		case evtOrderFailed:
			s.Status = OrderStatusFailed
		case evtOrderPaymentFailed:
			s.Status = OrderStatusPaymentFailed
		default:
			s.Status = OrderStatusCancelled
		}
		return nil
	}
	return unknownEvent(ev)
}
