package builtin

import (
	"fmt"
	"math"

	"github.com/rhizon/rhizon/actor"
)

// PaymentState is the state of a payment account of the saga. The balance is
// int64 minor units and never negative. Unlike account it needs no open step,
// so that an example flow is two commands shorter.
type PaymentState struct {
	Balance int64 `json:"balance"`
}

// PaymentDeposited is the payload of evt.payment.deposited.
type PaymentDeposited struct {
	Amount  int64 `json:"amount"`
	Balance int64 `json:"balance"`
}

// PaymentCharged is the payload of evt.payment.charged.
type PaymentCharged struct {
	Order   string `json:"order"`
	Amount  int64  `json:"amount"`
	Balance int64  `json:"balance"` // after the charge
}

// PaymentDeclined is the payload of evt.payment.declined.
type PaymentDeclined struct {
	Order   string `json:"order"`
	Amount  int64  `json:"amount"`
	Balance int64  `json:"balance"` // unchanged
	Reason  string `json:"reason"`
}

var (
	paymentVerbs        = []string{"charge", "deposit"}
	evtPaymentDeposited = actor.EventType(PaymentType, "deposited")
	evtPaymentCharged   = actor.EventType(PaymentType, "charged")
	evtPaymentDeclined  = actor.EventType(PaymentType, "declined")
)

// Payment returns the payment behaviour of the saga (see saga.go).
//
//	cmd.payment.deposit {"amount": n}  n a positive int64 (minor units)
//	  -> evt.payment.deposited {"amount", "balance"}
//	  rejects "overflow"
//	cmd.payment.charge {"order", "amount"}
//	  balance >= amount: -> evt.payment.charged {"order", "amount", "balance"}
//	                        Send cmd.order.charged {"payment": self, "amount"} to order
//	  otherwise:         -> evt.payment.declined {"order", "amount", "balance", "reason"}
//	                        Send cmd.order.charge_declined {"payment": self, "amount", "reason"}
//
// Every accepted charge command is a charge: a redelivered Send is kept to
// one by the engine's idempotency key, not by the payment remembering orders.
func Payment() actor.Behavior {
	return actor.Define(actor.Definition[PaymentState]{
		Name:     PaymentType,
		Revision: Revision,
		Commands: map[string]actor.Handler[PaymentState]{
			"deposit": paymentDeposit,
			"charge":  paymentCharge,
		},
		Validate: validatePayment,
		Apply:    applyPayment,
	})
}

func validatePayment(cmd *actor.Command) error {
	var err error
	switch cmd.Verb() {
	case "deposit":
		_, err = parseAccountAmount(cmd)
	case "charge":
		_, err = parsePaymentCharge(cmd)
	default:
		err = unknownVerb(PaymentType, cmd, paymentVerbs)
	}
	return err
}

func paymentDeposit(_ *actor.Context, s *PaymentState, cmd *actor.Command) ([]actor.NewEvent, error) {
	n, err := parseAccountAmount(cmd) // same payload and rules as account's deposit
	if err != nil {
		return nil, err
	}
	if s.Balance > math.MaxInt64-n {
		return nil, actor.Reject(actor.CodeOverflow, "depositing %d onto balance %d exceeds the maximum balance %d", n, s.Balance, int64(math.MaxInt64))
	}
	return []actor.NewEvent{{
		Name:    "deposited",
		Payload: actor.MustJSON(PaymentDeposited{Amount: n, Balance: s.Balance + n}),
	}}, nil
}

func paymentCharge(ctx *actor.Context, s *PaymentState, cmd *actor.Command) ([]actor.NewEvent, error) {
	p, err := parsePaymentCharge(cmd)
	if err != nil {
		return nil, err
	}
	self := ctx.Address().EntityID
	if p.Amount > s.Balance {
		reason := fmt.Sprintf("insufficient funds at %s: balance %d is less than the amount %d", self, s.Balance, p.Amount)
		replyToOrder(ctx, p.Order, cmdOrderChargeDeclined, OrderChargeDeclined{Payment: self, Amount: p.Amount, Reason: reason})
		return []actor.NewEvent{{
			Name:    "declined",
			Payload: actor.MustJSON(PaymentDeclined{Order: p.Order, Amount: p.Amount, Balance: s.Balance, Reason: reason}),
		}}, nil
	}
	replyToOrder(ctx, p.Order, cmdOrderCharged, OrderCharge{Payment: self, Amount: p.Amount})
	return []actor.NewEvent{{
		Name:    "charged",
		Payload: actor.MustJSON(PaymentCharged{Order: p.Order, Amount: p.Amount, Balance: s.Balance - p.Amount}),
	}}, nil
}

func applyPayment(s *PaymentState, ev *actor.Event) error {
	switch ev.Type {
	case evtPaymentDeposited:
		var e PaymentDeposited
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Balance = e.Balance
		return nil
	case evtPaymentCharged:
		var e PaymentCharged
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Balance = e.Balance
		return nil
	case evtPaymentDeclined:
		var e PaymentDeclined
		return decodeEvent(ev, &e) // recorded for the audit; the balance is unchanged
	}
	return unknownEvent(ev)
}
