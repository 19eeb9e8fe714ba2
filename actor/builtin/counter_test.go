package builtin

import (
	"testing"
)

func TestCounter(t *testing.T) {
	runCases(t, Counter, []tcase{
		{"add and subtract", []step{
			{verb: "add", payload: `{"amount":5}`,
				events: []string{`added {"amount":5,"value":5}`}, state: `{"value":5}`},
			{verb: "add", payload: ` { "amount" : -7 } `,
				events: []string{`added {"amount":-7,"value":-2}`}, state: `{"value":-2}`},
			{verb: "add", payload: `{"amount":2}`,
				events: []string{`added {"amount":2,"value":0}`}, state: `{"value":0}`},
		}},
		{"overflow up", []step{
			{verb: "add", payload: `{"amount":9223372036854775807}`,
				events: []string{`added {"amount":9223372036854775807,"value":9223372036854775807}`}},
			{verb: "add", payload: `{"amount":1}`, code: "overflow",
				msg: "adding 1 to 9223372036854775807 leaves the int64 range", state: `{"value":9223372036854775807}`},
			{verb: "add", payload: `{"amount":-1}`,
				events: []string{`added {"amount":-1,"value":9223372036854775806}`}},
		}},
		{"overflow down", []step{
			{verb: "add", payload: `{"amount":-9223372036854775808}`,
				events: []string{`added {"amount":-9223372036854775808,"value":-9223372036854775808}`}},
			{verb: "add", payload: `{"amount":-1}`, code: "overflow", msg: "adding -1 to -9223372036854775808"},
			{verb: "add", payload: `{"amount":9223372036854775807}`,
				events: []string{`added {"amount":9223372036854775807,"value":-1}`}},
		}},
	})
}

func TestCounterInvalid(t *testing.T) {
	for _, tc := range []struct{ verb, payload, msg string }{
		{"add", ``, `cmd.counter.add needs a JSON object payload like {"amount": 1}`},
		{"add", `   `, `needs a JSON object payload`},
		{"add", `{}`, `amount is required: a non-zero integer`},
		{"add", `{"amount":null}`, `amount is required`},
		{"add", `{"amount":0}`, `amount must be a non-zero integer, got 0`},
		{"add", `{"amount":"5"}`, `amount must be an integer (no fraction, no quotes) within the signed 64-bit range, got string`},
		{"add", `{"amount":1.5}`, `amount must be an integer (no fraction, no quotes) within the signed 64-bit range, got number 1.5`},
		{"add", `{"amount":1e30}`, `got number 1e30`},
		{"add", `{"amount":9223372036854775808}`, `got number 9223372036854775808`},
		{"add", `{"amount":true}`, `amount must be an integer`},
		{"add", `{"amount":1,"by":2}`, `unknown field "by"; cmd.counter.add accepts only "amount"`},
		{"add", `null`, `cmd.counter.add payload must be a JSON object like {"amount": 1}, got null`},
		{"add", `[1]`, `must be a JSON object like {"amount": 1}, got an array`},
		{"add", `5`, `got a number`},
		{"add", `x`, `got something that is not JSON`},
		{"add", `"5"`, `got a string`},
		{"add", `true`, `got a boolean`},
		{"add", `{"amount":1}}`, `data after the JSON object (at byte 12)`},
		{"add", `{"amount":1} {"amount":2}`, `data after the JSON object`},
		{"add", `{"amount":`, `not valid JSON: it ends before the object is closed`},
		{"add", `{"amount":1,}`, `not valid JSON: invalid character '}'`},
		{"sub", `{"amount":1}`, `actor type "counter" has no verb "sub"; verbs: [add]`},
	} {
		t.Run(tc.verb+" "+tc.payload, func(t *testing.T) {
			e := newEntity(Counter())
			e.check(t, 0, step{verb: tc.verb, payload: tc.payload, code: "invalid", msg: tc.msg, state: ""})
			if e.state != nil {
				t.Errorf("state changed to %s", e.state)
			}
		})
	}
}

// encoding/json matches field names case-insensitively, so "AMOUNT" is the
// amount field rather than an unknown one. This pins that behaviour.
func TestFieldNamesAreCaseInsensitive(t *testing.T) {
	runCases(t, Counter, []tcase{{"AMOUNT", []step{
		{verb: "add", payload: `{"AMOUNT":3}`, events: []string{`added {"amount":3,"value":3}`}},
	}}})
}
