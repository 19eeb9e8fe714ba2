package main

import (
	"strings"
	"testing"
	"time"
)

func TestRetentionFlag(t *testing.T) {
	var f retentionFlag
	if err := f.Set("tenant=acme:idempotency=72h;tenant=beta:idempotency=30d"); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("tenant=acme:idempotency=1h"); err != nil { // a later rule wins
		t.Fatal(err)
	}
	if f.windows["acme"] != time.Hour || f.windows["beta"] != 30*24*time.Hour {
		t.Fatalf("windows %v", f.windows)
	}
	if got := f.String(); got != "tenant=acme:idempotency=1h0m0s;tenant=beta:idempotency=720h0m0s" {
		t.Fatalf("String() = %q", got)
	}
	if err := f.Set("tenant=acme:history=30d;tenant=gamma:history=2s:idempotency=1s"); err != nil {
		t.Fatal(err)
	}
	if f.history["acme"] != 30*24*time.Hour || f.history["gamma"] != 2*time.Second || f.windows["gamma"] != time.Second || f.windows["acme"] != time.Hour {
		t.Fatalf("windows %v history %v", f.windows, f.history)
	}
	if got := f.String(); got != "tenant=acme:idempotency=1h0m0s:history=720h0m0s;tenant=beta:idempotency=720h0m0s;tenant=gamma:idempotency=1s:history=2s" {
		t.Fatalf("String() = %q", got)
	}
	for in, want := range map[string]string{
		"tenant=acme":                         "needs tenant=NAME and",
		"idempotency=1h":                      "needs tenant=NAME and",
		"tenant=acme:idempotency=soon":        "not a positive duration",
		"tenant=acme:idempotency=-1h":         "not a positive duration",
		"tenant=acme:history=0s":              "history=\"0s\" is not a positive duration",
		"tenant=acme:history-archive=/tmp/x":  "history-archive is not available",
		"tenant=acme:idempotency=1h:colour=1": `unknown key "colour"`,
		"acme":                                "not key=value",
	} {
		var f retentionFlag
		if err := f.Set(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Set(%q) = %v, want an error saying %q", in, err, want)
		}
	}
}
