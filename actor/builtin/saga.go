package builtin

import (
	"github.com/rhizon/rhizon/actor"
)

// The saga example: three actor types that run an order through a stock
// reservation and a payment, undoing the reservation when the payment fails.
// Nothing orchestrates them from outside: each step is an actor-to-actor
// ctx.Send, which the runtime delivers later, at least once, with a
// deterministic idempotency key (so a redelivery is applied once) and the
// correlation id of the cmd.order.place that started the flow.
//
//	client            order o1                 inventory wh1            payment acct1
//	place       ->    placed
//	                  Send reserve        ->   reserved (hold qty)
//	                                      <-   Send reserved
//	                  reserved
//	                  Send charge         ------------------------->   charged
//	                                      <-------------------------   Send charged
//	                  completed
//	                  Send commit         ->   committed (hold consumed)
//
// Compensation: a declined charge makes the order payment_failed and sends
// release; the inventory puts the held qty back and replies released; the order
// ends cancelled. Too little stock ends the order failed at the first step.
//
// A refusal that another actor must hear about (too little stock, too little
// money) is an accepted command with an event, not a rejection: a rejected
// command writes nothing but its audit record, so it could not Send the reply.
//
// The inventory keeps a hold per order until the order either releases it
// (compensation) or commits it (the order completed): commit deletes the hold
// and leaves the stock as it was (the units left at reserve), so the state
// holds only orders in flight.

// The saga's actor types.
const (
	OrderType     = "order"
	InventoryType = "inventory"
	PaymentType   = "payment"
)

// MaxReasonLen bounds the reason a saga reply carries.
const MaxReasonLen = 512

// InventoryReserve is the payload of cmd.inventory.reserve: hold qty units of
// sku for order (the entity id of an order in the same workspace, which the
// inventory replies to).
type InventoryReserve struct {
	Order string `json:"order"`
	SKU   string `json:"sku"`
	Qty   int64  `json:"qty"`
}

// InventoryOrderRef is the payload of cmd.inventory.release and
// cmd.inventory.commit: the order whose hold to return or consume.
type InventoryOrderRef struct {
	Order string `json:"order"`
}

// PaymentCharge is the payload of cmd.payment.charge.
type PaymentCharge struct {
	Order  string `json:"order"`
	Amount int64  `json:"amount"`
}

// OrderReservation is the payload of cmd.order.reserved and cmd.order.released
// (sent by the inventory) and of evt.order.reserved.
type OrderReservation struct {
	Inventory string `json:"inventory"`
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
}

// OrderReservationFailed is the payload of cmd.order.reservation_failed.
type OrderReservationFailed struct {
	Inventory string `json:"inventory"`
	Reason    string `json:"reason"`
}

// OrderCharge is the payload of cmd.order.charged (sent by the payment) and of
// evt.order.completed.
type OrderCharge struct {
	Payment string `json:"payment"`
	Amount  int64  `json:"amount"`
}

// OrderChargeDeclined is the payload of cmd.order.charge_declined.
type OrderChargeDeclined struct {
	Payment string `json:"payment"`
	Amount  int64  `json:"amount"`
	Reason  string `json:"reason"`
}

// The decode shapes use pointers so that a missing field is told apart from
// a zero one.
type inventoryReservePayload struct {
	Order *string `json:"order"`
	SKU   *string `json:"sku"`
	Qty   *int64  `json:"qty"`
}

type inventoryOrderRefPayload struct {
	Order *string `json:"order"`
}

type paymentChargePayload struct {
	Order  *string `json:"order"`
	Amount *int64  `json:"amount"`
}

type orderReservationPayload struct {
	Inventory *string `json:"inventory"`
	SKU       *string `json:"sku"`
	Qty       *int64  `json:"qty"`
}

type orderReservationFailedPayload struct {
	Inventory *string `json:"inventory"`
	Reason    *string `json:"reason"`
}

type orderChargePayload struct {
	Payment *string `json:"payment"`
	Amount  *int64  `json:"amount"`
}

type orderChargeDeclinedPayload struct {
	Payment *string `json:"payment"`
	Amount  *int64  `json:"amount"`
	Reason  *string `json:"reason"`
}

// needID checks a required identifier field (an entity id or a sku): present,
// and an id as actor.ValidateID defines it, because entity ids end up in
// addresses.
func needID(field string, v *string, what, example string) (string, error) {
	if v == nil {
		return "", actor.Invalid("%s is required: %s, e.g. %s", field, what, example)
	}
	if err := actor.ValidateID(field, *v); err != nil {
		return "", err
	}
	return *v, nil
}

// needPositive checks a required positive integer field.
func needPositive(field string, v *int64, what, example string) (int64, error) {
	if v == nil {
		return 0, actor.Invalid("%s is required: %s, a positive integer, e.g. %s", field, what, example)
	}
	if *v <= 0 {
		return 0, actor.Invalid("%s must be a positive integer (%s), got %d", field, what, *v)
	}
	return *v, nil
}

// needReason checks a required, non-empty, bounded reason.
func needReason(v *string, example string) (string, error) {
	if v == nil || *v == "" {
		return "", actor.Invalid("reason is required: a non-empty string saying why, e.g. %s", example)
	}
	if len(*v) > MaxReasonLen {
		return "", actor.Invalid("reason is %d bytes; the limit is %d", len(*v), MaxReasonLen)
	}
	return *v, nil
}

func parseInventoryReserve(cmd *actor.Command) (InventoryReserve, error) {
	const example = `{"order": "o1", "sku": "apple", "qty": 2}`
	var p inventoryReservePayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return InventoryReserve{}, err
	}
	order, err := needID("order", p.Order, "the entity id of the order to reply to", example)
	if err != nil {
		return InventoryReserve{}, err
	}
	sku, err := needID("sku", p.SKU, "the stock keeping unit", example)
	if err != nil {
		return InventoryReserve{}, err
	}
	qty, err := needPositive("qty", p.Qty, "units to hold", example)
	if err != nil {
		return InventoryReserve{}, err
	}
	return InventoryReserve{Order: order, SKU: sku, Qty: qty}, nil
}

func parseInventoryOrderRef(cmd *actor.Command) (InventoryOrderRef, error) {
	const example = `{"order": "o1"}`
	var p inventoryOrderRefPayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return InventoryOrderRef{}, err
	}
	order, err := needID("order", p.Order, "the entity id of the order whose hold this is", example)
	return InventoryOrderRef{Order: order}, err
}

func parsePaymentCharge(cmd *actor.Command) (PaymentCharge, error) {
	const example = `{"order": "o1", "amount": 1500}`
	var p paymentChargePayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return PaymentCharge{}, err
	}
	order, err := needID("order", p.Order, "the entity id of the order to reply to", example)
	if err != nil {
		return PaymentCharge{}, err
	}
	amount, err := needPositive("amount", p.Amount, "minor units", example)
	if err != nil {
		return PaymentCharge{}, err
	}
	return PaymentCharge{Order: order, Amount: amount}, nil
}

func parseOrderReservation(cmd *actor.Command) (OrderReservation, error) {
	const example = `{"inventory": "wh1", "sku": "apple", "qty": 2}`
	var p orderReservationPayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return OrderReservation{}, err
	}
	inv, err := needID("inventory", p.Inventory, "the entity id of the inventory that replies", example)
	if err != nil {
		return OrderReservation{}, err
	}
	sku, err := needID("sku", p.SKU, "the stock keeping unit", example)
	if err != nil {
		return OrderReservation{}, err
	}
	qty, err := needPositive("qty", p.Qty, "units held", example)
	if err != nil {
		return OrderReservation{}, err
	}
	return OrderReservation{Inventory: inv, SKU: sku, Qty: qty}, nil
}

func parseOrderReservationFailed(cmd *actor.Command) (OrderReservationFailed, error) {
	const example = `{"inventory": "wh1", "reason": "out of stock"}`
	var p orderReservationFailedPayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return OrderReservationFailed{}, err
	}
	inv, err := needID("inventory", p.Inventory, "the entity id of the inventory that replies", example)
	if err != nil {
		return OrderReservationFailed{}, err
	}
	reason, err := needReason(p.Reason, example)
	if err != nil {
		return OrderReservationFailed{}, err
	}
	return OrderReservationFailed{Inventory: inv, Reason: reason}, nil
}

func parseOrderCharge(cmd *actor.Command) (OrderCharge, error) {
	const example = `{"payment": "acct1", "amount": 1500}`
	var p orderChargePayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return OrderCharge{}, err
	}
	pay, err := needID("payment", p.Payment, "the entity id of the payment that replies", example)
	if err != nil {
		return OrderCharge{}, err
	}
	amount, err := needPositive("amount", p.Amount, "minor units charged", example)
	if err != nil {
		return OrderCharge{}, err
	}
	return OrderCharge{Payment: pay, Amount: amount}, nil
}

func parseOrderChargeDeclined(cmd *actor.Command) (OrderChargeDeclined, error) {
	const example = `{"payment": "acct1", "amount": 1500, "reason": "insufficient funds"}`
	var p orderChargeDeclinedPayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return OrderChargeDeclined{}, err
	}
	pay, err := needID("payment", p.Payment, "the entity id of the payment that replies", example)
	if err != nil {
		return OrderChargeDeclined{}, err
	}
	amount, err := needPositive("amount", p.Amount, "minor units asked for", example)
	if err != nil {
		return OrderChargeDeclined{}, err
	}
	reason, err := needReason(p.Reason, example)
	if err != nil {
		return OrderChargeDeclined{}, err
	}
	return OrderChargeDeclined{Payment: pay, Amount: amount, Reason: reason}, nil
}
