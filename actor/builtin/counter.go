package builtin

import (
	"encoding/json"
	"math"

	"github.com/rhizon/rhizon/actor"
)

// CounterType is the actor type of the counter.
const CounterType = "counter"

// CounterState is the state of a counter. A new counter is 0.
type CounterState struct {
	Value int64 `json:"value"`
}

// CounterAdded is the payload of evt.counter.added: the amount added and the
// value after it.
type CounterAdded struct {
	Amount int64 `json:"amount"`
	Value  int64 `json:"value"`
}

// counterAddPayload is the payload of cmd.counter.add.
type counterAddPayload struct {
	Amount *int64 `json:"amount"`
}

var (
	counterVerbs    = []string{"add"}
	evtCounterAdded = actor.EventType(CounterType, "added")
)

// Counter returns the counter behaviour.
//
//	cmd.counter.add {"amount": n}  n a non-zero int64 (negative subtracts)
//	  -> evt.counter.added {"amount": n, "value": newValue}
//	  rejects "overflow" if the value would leave the int64 range.
func Counter() actor.Behavior {
	return actor.Define(actor.Definition[CounterState]{
		Name:     CounterType,
		Revision: Revision,
		Commands: map[string]actor.Handler[CounterState]{
			"add": counterAdd,
		},
		Validate:    validateCounter,
		Apply:       applyCounter,
		EncodeState: encodeCounterState,
		DecodeState: decodeCounterState,
	})
}

// The counter is the hottest built-in type, so its payloads, events and state
// skip encoding/json when they have the one shape encoding/json itself writes
// (or a client usually sends); anything else goes through encoding/json, so
// results, stored bytes and error messages are the same either way.

// encodeCounterState writes exactly what json.Marshal writes: {"value":N}.
func encodeCounterState(s *CounterState) ([]byte, error) {
	b := make([]byte, 0, len(`{"value":-9223372036854775808}`))
	b = appendIntField(append(b, '{'), "value", s.Value)
	return append(b, '}'), nil
}

func decodeCounterState(state []byte, s *CounterState) error {
	sc := jsonScan{b: state}
	if sc.byte('{') && sc.key("value") {
		if v, ok := sc.int64(); ok && sc.byte('}') && sc.end() {
			s.Value = v
			return nil
		}
	}
	return json.Unmarshal(state, s)
}

// encodeCounterAdded writes exactly what json.Marshal writes for CounterAdded.
func encodeCounterAdded(e CounterAdded) []byte {
	b := make([]byte, 0, len(`{"amount":-9223372036854775808,"value":-9223372036854775808}`))
	b = appendIntField(append(b, '{'), "amount", e.Amount)
	b = appendIntField(append(b, ','), "value", e.Value)
	return append(b, '}')
}

func decodeCounterAdded(ev *actor.Event) (CounterAdded, error) {
	sc := jsonScan{b: ev.Payload}
	if sc.byte('{') && sc.key("amount") {
		if a, ok := sc.int64(); ok && sc.byte(',') && sc.key("value") {
			if v, ok := sc.int64(); ok && sc.byte('}') && sc.end() {
				return CounterAdded{Amount: a, Value: v}, nil
			}
		}
	}
	var e CounterAdded
	err := decodeEvent(ev, &e)
	return e, err
}

// fastCounterAdd reads a payload of the form {"amount":N}, N a non-zero
// int64; ok is false for anything else, which parseCounterAdd then reads
// with encoding/json.
func fastCounterAdd(payload []byte) (n int64, ok bool) {
	sc := jsonScan{b: payload}
	if !sc.byte('{') || !sc.key("amount") {
		return 0, false
	}
	n, ok = sc.int64()
	if !ok || n == 0 || !sc.byte('}') || !sc.end() {
		return 0, false
	}
	return n, true
}

func validateCounter(cmd *actor.Command) error {
	switch cmd.Verb() {
	case "add":
		_, err := parseCounterAdd(cmd)
		return err
	}
	return unknownVerb(CounterType, cmd, counterVerbs)
}

func parseCounterAdd(cmd *actor.Command) (int64, error) {
	if n, ok := fastCounterAdd(cmd.Payload); ok {
		return n, nil
	}
	return parseCounterAddJSON(cmd)
}

func parseCounterAddJSON(cmd *actor.Command) (int64, error) {
	var p counterAddPayload
	if err := decodePayload(cmd, &p, `{"amount": 1}`, false, false); err != nil {
		return 0, err
	}
	if p.Amount == nil {
		return 0, actor.Invalid(`amount is required: a non-zero integer, e.g. {"amount": 1} or {"amount": -1}`)
	}
	if *p.Amount == 0 {
		return 0, actor.Invalid("amount must be a non-zero integer, got 0")
	}
	return *p.Amount, nil
}

func counterAdd(_ *actor.Context, s *CounterState, cmd *actor.Command) ([]actor.NewEvent, error) {
	n, err := parseCounterAdd(cmd)
	if err != nil {
		return nil, err
	}
	if (n > 0 && s.Value > math.MaxInt64-n) || (n < 0 && s.Value < math.MinInt64-n) {
		return nil, actor.Reject(actor.CodeOverflow, "adding %d to %d leaves the int64 range [%d, %d]", n, s.Value, int64(math.MinInt64), int64(math.MaxInt64))
	}
	return []actor.NewEvent{{
		Name:    "added",
		Payload: encodeCounterAdded(CounterAdded{Amount: n, Value: s.Value + n}),
	}}, nil
}

func applyCounter(s *CounterState, ev *actor.Event) error {
	switch ev.Type {
	case evtCounterAdded:
		e, err := decodeCounterAdded(ev)
		if err != nil {
			return err
		}
		s.Value = e.Value
		return nil
	}
	return unknownEvent(ev)
}
