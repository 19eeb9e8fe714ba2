package builtin

import (
	"fmt"
	"math"

	"github.com/rhizon/rhizon/actor"
)

// InventoryState is the state of an inventory (one warehouse or stock pool,
// any number of skus). Per sku, Available units can be reserved and Held units
// are reserved by orders in flight; Holds has one entry per such order.
// encoding/json writes map keys sorted, so the state encodes
// deterministically; the code only looks keys up, never ranges over them.
type InventoryState struct {
	SKUs  map[string]InventorySKU  `json:"skus,omitempty"`
	Holds map[string]InventoryHold `json:"holds,omitempty"` // order entity id -> hold
}

// InventorySKU is the stock of one sku.
type InventorySKU struct {
	Available int64 `json:"available"`
	Held      int64 `json:"held"`
}

// InventoryHold is what one order has reserved.
type InventoryHold struct {
	SKU string `json:"sku"`
	Qty int64  `json:"qty"`
}

// InventoryStock is the payload of cmd.inventory.stock.
type InventoryStock struct {
	SKU string `json:"sku"`
	Qty int64  `json:"qty"`
}

// InventoryStocked is the payload of evt.inventory.stocked.
type InventoryStocked struct {
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
	Available int64  `json:"available"` // after the event
}

// InventoryHoldChange is the payload of evt.inventory.reserved,
// evt.inventory.released and evt.inventory.committed: the order's hold and
// the sku's available units after the event.
type InventoryHoldChange struct {
	Order     string `json:"order"`
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
	Available int64  `json:"available"`
}

// InventoryReservationRejected is the payload of
// evt.inventory.reservation_rejected.
type InventoryReservationRejected struct {
	Order     string `json:"order"`
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
	Available int64  `json:"available"`
	Reason    string `json:"reason"`
}

type inventoryStockPayload struct {
	SKU *string `json:"sku"`
	Qty *int64  `json:"qty"`
}

var (
	inventoryVerbs                  = []string{"commit", "release", "reserve", "stock"}
	evtInventoryStocked             = actor.EventType(InventoryType, "stocked")
	evtInventoryReserved            = actor.EventType(InventoryType, "reserved")
	evtInventoryReservationRejected = actor.EventType(InventoryType, "reservation_rejected")
	evtInventoryReleased            = actor.EventType(InventoryType, "released")
	evtInventoryCommitted           = actor.EventType(InventoryType, "committed")
)

// Inventory returns the inventory behaviour of the saga (see saga.go).
//
//	cmd.inventory.stock   {"sku", "qty"}  qty a positive int64
//	  -> evt.inventory.stocked {"sku", "qty", "available"}
//	  rejects "overflow" if the sku's available plus held units would pass int64
//	cmd.inventory.reserve {"order", "sku", "qty"}
//	  enough available: -> evt.inventory.reserved {"order", "sku", "qty", "available"}
//	                       Send cmd.order.reserved {"inventory": self, "sku", "qty"} to order
//	  too few:          -> evt.inventory.reservation_rejected {"order", "sku", "qty", "available", "reason"}
//	                       Send cmd.order.reservation_failed {"inventory": self, "reason"}
//	  the order already holds the same sku and qty: no event, Send cmd.order.reserved again
//	  rejects "hold_mismatch" if the order holds something else
//	cmd.inventory.release {"order"}
//	  -> evt.inventory.released {"order", "sku", "qty", "available"} (the units are available again)
//	     Send cmd.order.released {"inventory": self, "sku", "qty"}
//	  rejects "no_hold"
//	cmd.inventory.commit  {"order"}
//	  -> evt.inventory.committed {"order", "sku", "qty", "available"} (the held units are sold:
//	     the hold is dropped, available is unchanged); no reply
//	  rejects "no_hold"
func Inventory() actor.Behavior {
	return actor.Define(actor.Definition[InventoryState]{
		Name:     InventoryType,
		Revision: Revision,
		Commands: map[string]actor.Handler[InventoryState]{
			"stock":   inventoryStock,
			"reserve": inventoryReserve,
			"release": inventoryRelease,
			"commit":  inventoryCommit,
		},
		Validate: validateInventory,
		Apply:    applyInventory,
	})
}

func validateInventory(cmd *actor.Command) error {
	var err error
	switch cmd.Verb() {
	case "stock":
		_, err = parseInventoryStock(cmd)
	case "reserve":
		_, err = parseInventoryReserve(cmd)
	case "release", "commit":
		_, err = parseInventoryOrderRef(cmd)
	default:
		err = unknownVerb(InventoryType, cmd, inventoryVerbs)
	}
	return err
}

func parseInventoryStock(cmd *actor.Command) (InventoryStock, error) {
	const example = `{"sku": "apple", "qty": 10}`
	var p inventoryStockPayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return InventoryStock{}, err
	}
	sku, err := needID("sku", p.SKU, "the stock keeping unit", example)
	if err != nil {
		return InventoryStock{}, err
	}
	qty, err := needPositive("qty", p.Qty, "units to add", example)
	if err != nil {
		return InventoryStock{}, err
	}
	return InventoryStock{SKU: sku, Qty: qty}, nil
}

func inventoryStock(_ *actor.Context, s *InventoryState, cmd *actor.Command) ([]actor.NewEvent, error) {
	p, err := parseInventoryStock(cmd)
	if err != nil {
		return nil, err
	}
	cur := s.SKUs[p.SKU]
	// Held units come back on release, so bound the total, not just available.
	if cur.Available > math.MaxInt64-cur.Held-p.Qty {
		return nil, actor.Reject(actor.CodeOverflow, "adding %d to %s (%d available, %d held) exceeds the maximum %d", p.Qty, p.SKU, cur.Available, cur.Held, int64(math.MaxInt64))
	}
	return []actor.NewEvent{{
		Name:    "stocked",
		Payload: actor.MustJSON(InventoryStocked{SKU: p.SKU, Qty: p.Qty, Available: cur.Available + p.Qty}),
	}}, nil
}

// replyToOrder sends a reply to the order entity the request named, in the
// inventory's own tenant and workspace.
func replyToOrder(ctx *actor.Context, order, cmdType string, payload any) {
	ctx.Send(actor.Address{ActorType: OrderType, EntityID: order}, cmdType, actor.MustJSON(payload))
}

func inventoryReserve(ctx *actor.Context, s *InventoryState, cmd *actor.Command) ([]actor.NewEvent, error) {
	p, err := parseInventoryReserve(cmd)
	if err != nil {
		return nil, err
	}
	self := ctx.Address().EntityID
	if h, ok := s.Holds[p.Order]; ok {
		if h.SKU != p.SKU || h.Qty != p.Qty {
			return nil, actor.Reject(actor.CodeHoldMismatch, "order %q already holds %d x %s, not %d x %s", p.Order, h.Qty, h.SKU, p.Qty, p.SKU)
		}
		// Asked again for what it holds: confirm again, hold nothing more.
		replyToOrder(ctx, p.Order, cmdOrderReserved, OrderReservation{Inventory: self, SKU: p.SKU, Qty: p.Qty})
		return nil, nil
	}
	avail := s.SKUs[p.SKU].Available
	if avail < p.Qty {
		reason := fmt.Sprintf("insufficient stock of %s at %s: %d available, %d requested", p.SKU, self, avail, p.Qty)
		replyToOrder(ctx, p.Order, cmdOrderResFailed, OrderReservationFailed{Inventory: self, Reason: reason})
		return []actor.NewEvent{{
			Name: "reservation_rejected",
			Payload: actor.MustJSON(InventoryReservationRejected{
				Order: p.Order, SKU: p.SKU, Qty: p.Qty, Available: avail, Reason: reason}),
		}}, nil
	}
	replyToOrder(ctx, p.Order, cmdOrderReserved, OrderReservation{Inventory: self, SKU: p.SKU, Qty: p.Qty})
	return []actor.NewEvent{{
		Name:    "reserved",
		Payload: actor.MustJSON(InventoryHoldChange{Order: p.Order, SKU: p.SKU, Qty: p.Qty, Available: avail - p.Qty}),
	}}, nil
}

func (s *InventoryState) hold(order string) (InventoryHold, error) {
	h, ok := s.Holds[order]
	if !ok {
		return h, actor.Reject(actor.CodeNoHold, "no reservation is held for order %q", order)
	}
	return h, nil
}

func inventoryRelease(ctx *actor.Context, s *InventoryState, cmd *actor.Command) ([]actor.NewEvent, error) {
	p, err := parseInventoryOrderRef(cmd)
	if err != nil {
		return nil, err
	}
	h, err := s.hold(p.Order)
	if err != nil {
		return nil, err
	}
	replyToOrder(ctx, p.Order, cmdOrderReleased, OrderReservation{Inventory: ctx.Address().EntityID, SKU: h.SKU, Qty: h.Qty})
	return []actor.NewEvent{{
		Name:    "released",
		Payload: actor.MustJSON(InventoryHoldChange{Order: p.Order, SKU: h.SKU, Qty: h.Qty, Available: s.SKUs[h.SKU].Available + h.Qty}),
	}}, nil
}

func inventoryCommit(_ *actor.Context, s *InventoryState, cmd *actor.Command) ([]actor.NewEvent, error) {
	p, err := parseInventoryOrderRef(cmd)
	if err != nil {
		return nil, err
	}
	h, err := s.hold(p.Order)
	if err != nil {
		return nil, err
	}
	return []actor.NewEvent{{
		Name:    "committed",
		Payload: actor.MustJSON(InventoryHoldChange{Order: p.Order, SKU: h.SKU, Qty: h.Qty, Available: s.SKUs[h.SKU].Available}),
	}}, nil
}

func applyInventory(s *InventoryState, ev *actor.Event) error {
	switch ev.Type {
	case evtInventoryStocked:
		var e InventoryStocked
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.setSKU(e.SKU, func(k *InventorySKU) { k.Available += e.Qty })
		return nil
	case evtInventoryReservationRejected:
		var e InventoryReservationRejected
		return decodeEvent(ev, &e) // recorded for the audit; the stock is unchanged
	case evtInventoryReserved, evtInventoryReleased, evtInventoryCommitted:
		var e InventoryHoldChange
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		switch ev.Type {
		case evtInventoryReserved:
			s.setSKU(e.SKU, func(k *InventorySKU) { k.Available -= e.Qty; k.Held += e.Qty })
			if s.Holds == nil {
				s.Holds = map[string]InventoryHold{}
			}
			s.Holds[e.Order] = InventoryHold{SKU: e.SKU, Qty: e.Qty}
		case evtInventoryReleased:
			s.setSKU(e.SKU, func(k *InventorySKU) { k.Available += e.Qty; k.Held -= e.Qty })
			delete(s.Holds, e.Order)
		default:
			s.setSKU(e.SKU, func(k *InventorySKU) { k.Held -= e.Qty })
			delete(s.Holds, e.Order)
		}
		return nil
	}
	return unknownEvent(ev)
}

func (s *InventoryState) setSKU(sku string, f func(*InventorySKU)) {
	if s.SKUs == nil {
		s.SKUs = map[string]InventorySKU{}
	}
	k := s.SKUs[sku]
	f(&k)
	s.SKUs[sku] = k
}
