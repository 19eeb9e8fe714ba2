package builtin

import "testing"

func TestAccount(t *testing.T) {
	runCases(t, Account, []tcase{
		{"open default currency, deposit, withdraw", []step{
			{verb: "open", payload: ``,
				events: []string{`opened {"currency":"USD","balance":0}`}, state: `{"open":true,"currency":"USD","balance":0}`},
			{verb: "deposit", payload: `{"amount":100}`,
				events: []string{`deposited {"amount":100,"balance":100}`}, state: `{"open":true,"currency":"USD","balance":100}`},
			{verb: "withdraw", payload: `{"amount":30}`,
				events: []string{`withdrew {"amount":30,"balance":70}`}, state: `{"open":true,"currency":"USD","balance":70}`},
			{verb: "withdraw", payload: `{"amount":71}`, code: "insufficient_funds",
				msg: "balance 70 USD is less than the amount 71"},
			{verb: "withdraw", payload: `{"amount":70}`,
				events: []string{`withdrew {"amount":70,"balance":0}`}, state: `{"open":true,"currency":"USD","balance":0}`},
			{verb: "withdraw", payload: `{"amount":1}`, code: "insufficient_funds", msg: "balance 0 USD is less than the amount 1"},
		}},
		{"open with currency", []step{
			{verb: "open", payload: `{"currency":"EUR"}`,
				events: []string{`opened {"currency":"EUR","balance":0}`}, state: `{"open":true,"currency":"EUR","balance":0}`},
			{verb: "open", payload: `{}`, code: "already_open", msg: "account is already open (currency EUR, balance 0)"},
			{verb: "open", payload: `{"currency":"GBP"}`, code: "already_open", msg: "already open"},
		}},
		{"open with {} and null currency", []step{
			{verb: "open", payload: `{"currency":null}`, events: []string{`opened {"currency":"USD","balance":0}`}},
		}},
		{"not open", []step{
			{verb: "deposit", payload: `{"amount":1}`, code: "not_open", msg: "account is not open; send cmd.account.open first"},
			{verb: "withdraw", payload: `{"amount":1}`, code: "not_open", msg: "not open"},
		}},
		{"deposit overflow", []step{
			{verb: "open", payload: `{}`, events: []string{`opened {"currency":"USD","balance":0}`}},
			{verb: "deposit", payload: `{"amount":9223372036854775807}`,
				events: []string{`deposited {"amount":9223372036854775807,"balance":9223372036854775807}`}},
			{verb: "deposit", payload: `{"amount":1}`, code: "overflow",
				msg: "depositing 1 onto balance 9223372036854775807 exceeds the maximum balance"},
		}},
	})
}

func TestAccountInvalid(t *testing.T) {
	for _, tc := range []struct{ verb, payload, msg string }{
		{"open", `{"currency":"eur"}`, `currency must be 3 upper-case letters (an ISO 4217 code like "EUR"), got "eur"; omit it for USD`},
		{"open", `{"currency":"EURO"}`, `got "EURO"`},
		{"open", `{"currency":""}`, `got ""`},
		{"open", `{"currency":"E1R"}`, `got "E1R"`},
		{"open", `{"currency":978}`, `currency must be a string, got number`},
		{"open", `{"currency":"EUR","owner":"x"}`, `unknown field "owner"; cmd.account.open accepts only "currency"`},
		{"open", `[]`, `got an array`},
		{"deposit", ``, `cmd.account.deposit needs a JSON object payload like {"amount": 100}`},
		{"deposit", `{}`, `amount is required: a positive integer in minor units`},
		{"deposit", `{"amount":-3}`, `amount must be a positive integer (minor units), got -3`},
		{"deposit", `{"amount":0}`, `amount must be a positive integer (minor units), got 0`},
		{"deposit", `{"amount":"100"}`, `amount must be an integer (no fraction, no quotes) within the signed 64-bit range, got string`},
		{"deposit", `{"amount":10.5}`, `got number 10.5`},
		{"withdraw", `{"amount":-1}`, `amount must be a positive integer (minor units), got -1`},
		{"withdraw", `{"amount":1,"memo":"x"}`, `unknown field "memo"`},
		{"withdraw", `{"amount":1}x`, `data after the JSON object`},
		{"close", `{}`, `actor type "account" has no verb "close"; verbs: [deposit open withdraw]`},
	} {
		t.Run(tc.verb+" "+tc.payload, func(t *testing.T) {
			e := newEntity(Account())
			e.check(t, 0, step{verb: tc.verb, payload: tc.payload, code: "invalid", msg: tc.msg})
		})
	}
}
