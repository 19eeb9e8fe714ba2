package builtin

import (
	"math"

	"github.com/rhizon/rhizon/actor"
)

// AccountType is the actor type of the account.
const AccountType = "account"

// DefaultCurrency is the currency of an account opened without one.
const DefaultCurrency = "USD"

// AccountState is the state of an account. Amounts are int64 minor units
// (cents for USD); the balance is never negative.
type AccountState struct {
	Open     bool   `json:"open"`
	Currency string `json:"currency,omitempty"`
	Balance  int64  `json:"balance"`
}

// AccountOpened is the payload of evt.account.opened.
type AccountOpened struct {
	Currency string `json:"currency"`
	Balance  int64  `json:"balance"`
}

// AccountMoved is the payload of evt.account.deposited and
// evt.account.withdrew: the amount moved and the balance after it.
type AccountMoved struct {
	Amount  int64 `json:"amount"`
	Balance int64 `json:"balance"`
}

type accountOpenPayload struct {
	Currency *string `json:"currency"`
}

type accountAmountPayload struct {
	Amount *int64 `json:"amount"`
}

var (
	accountVerbs        = []string{"deposit", "open", "withdraw"}
	evtAccountOpened    = actor.EventType(AccountType, "opened")
	evtAccountDeposited = actor.EventType(AccountType, "deposited")
	evtAccountWithdrew  = actor.EventType(AccountType, "withdrew")
)

// Account returns the account behaviour.
//
//	cmd.account.open     {"currency": "EUR"}  optional, 3 upper-case letters, default "USD";
//	                     the payload may be empty
//	  -> evt.account.opened {"currency": "EUR", "balance": 0}
//	  rejects "already_open"
//	cmd.account.deposit  {"amount": n}  n a positive int64 (minor units)
//	  -> evt.account.deposited {"amount": n, "balance": newBalance}
//	  rejects "not_open", "overflow"
//	cmd.account.withdraw {"amount": n}  n a positive int64
//	  -> evt.account.withdrew {"amount": n, "balance": newBalance}
//	  rejects "not_open", "insufficient_funds"
func Account() actor.Behavior {
	return actor.Define(actor.Definition[AccountState]{
		Name:     AccountType,
		Revision: Revision,
		Commands: map[string]actor.Handler[AccountState]{
			"open":     accountOpen,
			"deposit":  accountDeposit,
			"withdraw": accountWithdraw,
		},
		Validate: validateAccount,
		Apply:    applyAccount,
	})
}

func validateAccount(cmd *actor.Command) error {
	var err error
	switch cmd.Verb() {
	case "open":
		_, err = parseAccountOpen(cmd)
	case "deposit", "withdraw":
		_, err = parseAccountAmount(cmd)
	default:
		err = unknownVerb(AccountType, cmd, accountVerbs)
	}
	return err
}

func parseAccountOpen(cmd *actor.Command) (string, error) {
	var p accountOpenPayload
	if err := decodePayload(cmd, &p, `{"currency": "EUR"}`, true, false); err != nil {
		return "", err
	}
	if p.Currency == nil {
		return DefaultCurrency, nil
	}
	c := *p.Currency
	ok := len(c) == 3
	for i := 0; ok && i < len(c); i++ {
		ok = c[i] >= 'A' && c[i] <= 'Z'
	}
	if !ok {
		return "", actor.Invalid(`currency must be 3 upper-case letters (an ISO 4217 code like "EUR"), got %q; omit it for %s`, c, DefaultCurrency)
	}
	return c, nil
}

func parseAccountAmount(cmd *actor.Command) (int64, error) {
	var p accountAmountPayload
	if err := decodePayload(cmd, &p, `{"amount": 100}`, false, false); err != nil {
		return 0, err
	}
	if p.Amount == nil {
		return 0, actor.Invalid(`amount is required: a positive integer in minor units (cents), e.g. {"amount": 100}`)
	}
	if *p.Amount <= 0 {
		return 0, actor.Invalid("amount must be a positive integer (minor units), got %d", *p.Amount)
	}
	return *p.Amount, nil
}

func accountOpen(_ *actor.Context, s *AccountState, cmd *actor.Command) ([]actor.NewEvent, error) {
	cur, err := parseAccountOpen(cmd)
	if err != nil {
		return nil, err
	}
	if s.Open {
		return nil, actor.Reject(actor.CodeAlreadyOpen, "account is already open (currency %s, balance %d)", s.Currency, s.Balance)
	}
	return []actor.NewEvent{{
		Name:    "opened",
		Payload: actor.MustJSON(AccountOpened{Currency: cur, Balance: s.Balance}),
	}}, nil
}

func accountDeposit(_ *actor.Context, s *AccountState, cmd *actor.Command) ([]actor.NewEvent, error) {
	n, err := parseAccountAmount(cmd)
	if err != nil {
		return nil, err
	}
	if !s.Open {
		return nil, actor.Reject(actor.CodeNotOpen, "account is not open; send cmd.account.open first")
	}
	if s.Balance > math.MaxInt64-n {
		return nil, actor.Reject(actor.CodeOverflow, "depositing %d onto balance %d exceeds the maximum balance %d", n, s.Balance, int64(math.MaxInt64))
	}
	return []actor.NewEvent{{
		Name:    "deposited",
		Payload: actor.MustJSON(AccountMoved{Amount: n, Balance: s.Balance + n}),
	}}, nil
}

func accountWithdraw(_ *actor.Context, s *AccountState, cmd *actor.Command) ([]actor.NewEvent, error) {
	n, err := parseAccountAmount(cmd)
	if err != nil {
		return nil, err
	}
	if !s.Open {
		return nil, actor.Reject(actor.CodeNotOpen, "account is not open; send cmd.account.open first")
	}
	if n > s.Balance {
		return nil, actor.Reject(actor.CodeInsufficientFunds, "balance %d %s is less than the amount %d", s.Balance, s.Currency, n)
	}
	return []actor.NewEvent{{
		Name:    "withdrew",
		Payload: actor.MustJSON(AccountMoved{Amount: n, Balance: s.Balance - n}),
	}}, nil
}

func applyAccount(s *AccountState, ev *actor.Event) error {
	switch ev.Type {
	case evtAccountOpened:
		var e AccountOpened
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Open, s.Currency, s.Balance = true, e.Currency, e.Balance
		return nil
	case evtAccountDeposited, evtAccountWithdrew:
		var e AccountMoved
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Balance = e.Balance
		return nil
	}
	return unknownEvent(ev)
}
