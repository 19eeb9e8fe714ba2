package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// retentionFlag collects --retention values: "tenant=acme:idempotency=72h",
// several joined with ';' or the flag repeated. Days ("30d") are accepted.
type retentionFlag struct {
	windows map[string]time.Duration
}

func (f *retentionFlag) String() string {
	tenants := make([]string, 0, len(f.windows))
	for t := range f.windows {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	parts := make([]string, 0, len(tenants))
	for _, t := range tenants {
		parts = append(parts, fmt.Sprintf("tenant=%s:idempotency=%s", t, f.windows[t]))
	}
	return strings.Join(parts, ";")
}

func (f *retentionFlag) Type() string { return "rules" }

func (f *retentionFlag) Set(v string) error {
	for _, rule := range strings.Split(v, ";") {
		if rule = strings.TrimSpace(rule); rule == "" {
			continue
		}
		tenant, win, err := parseRetentionRule(rule)
		if err != nil {
			return err
		}
		if f.windows == nil {
			f.windows = map[string]time.Duration{}
		}
		f.windows[tenant] = win
	}
	return nil
}

func parseRetentionRule(rule string) (string, time.Duration, error) {
	var tenant string
	var win time.Duration
	for _, kv := range strings.Split(rule, ":") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", 0, fmt.Errorf("retention rule %q: %q is not key=value (want tenant=NAME:idempotency=72h)", rule, kv)
		}
		switch k {
		case "tenant":
			tenant = v
		case "idempotency":
			d, err := parseDays(v)
			if err != nil || d <= 0 {
				return "", 0, fmt.Errorf("retention rule %q: idempotency=%q is not a positive duration (e.g. 72h, 30d)", rule, v)
			}
			win = d
		case "history":
			return "", 0, fmt.Errorf("retention rule %q: history retention is not available yet; only idempotency=<window> is", rule)
		default:
			return "", 0, fmt.Errorf("retention rule %q: unknown key %q (want tenant and idempotency)", rule, k)
		}
	}
	if tenant == "" || win == 0 {
		return "", 0, fmt.Errorf("retention rule %q: needs both tenant=NAME and idempotency=<window>", rule)
	}
	return tenant, win, nil
}

// parseDays is time.ParseDuration plus a whole number of days ("30d").
func parseDays(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, err
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}
