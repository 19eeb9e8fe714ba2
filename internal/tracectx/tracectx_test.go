package tracectx

import (
	"testing"

	"github.com/rhizon/rhizon/actor"
)

func TestParseFormatRoundTrip(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	sc := Parse(tp)
	if !sc.IsValid() || !sc.IsRemote() || !sc.IsSampled() || sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("Parse(%q) = %+v", tp, sc)
	}
	if got := Format(sc); got != tp {
		t.Fatalf("Format = %q, want %q", got, tp)
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if Parse(bad).IsValid() || Format(Parse(bad)) != "" {
			t.Errorf("Parse(%q) is valid", bad)
		}
	}
}

func TestFromNATSTakesEitherSpelling(t *testing.T) {
	if got := FromNATS(map[string][]string{"Traceparent": {"x"}}); got != "x" {
		t.Errorf("canonical spelling: %q", got)
	}
	if got := FromNATS(map[string][]string{"traceparent": {"y"}, "Traceparent": {"x"}}); got != "y" {
		t.Errorf("lower-case spelling first: %q", got)
	}
	if got := FromNATS(nil); got != "" {
		t.Errorf("no header: %q", got)
	}
}

func TestResultAttributes(t *testing.T) {
	get := func(r actor.Result) map[string]string {
		m := map[string]string{}
		for _, kv := range Result(&r) {
			m[string(kv.Key)] = kv.Value.String()
		}
		return m
	}
	cases := []struct {
		r    actor.Result
		want map[string]string
	}{
		{actor.Result{Status: actor.StatusAccepted, Replay: true}, map[string]string{"rhizon.result.code": "accepted", "rhizon.idempotency.hit": "true"}},
		{actor.Result{Status: actor.StatusRejected, Reason: actor.ReasonViolation}, map[string]string{"rhizon.result.code": "violation", "rhizon.violation": "true", "rhizon.conflict": "false"}},
		{actor.Result{Status: actor.StatusRejected, Reason: actor.ReasonBusiness, Code: "insufficient_funds"}, map[string]string{"rhizon.result.code": "insufficient_funds", "rhizon.result.reason": "business"}},
	}
	for _, c := range cases {
		got := get(c.r)
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("%+v: %s = %q, want %q", c.r, k, got[k], v)
			}
		}
	}
}

// Parse runs for every command on every replica: the common shape must not
// allocate.
func TestParseDoesNotAllocate(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if n := testing.AllocsPerRun(100, func() { _ = Parse(tp) }); n != 0 {
		t.Fatalf("Parse allocates %v times per call", n)
	}
}
