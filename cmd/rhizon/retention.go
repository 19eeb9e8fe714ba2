package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// retentionFlag collects --retention values: "tenant=acme:idempotency=72h",
// "tenant=acme:history=30d" or both in one rule, several joined with ';' or
// the flag repeated. Days ("30d") are accepted.
type retentionFlag struct {
	windows map[string]time.Duration // idempotency
	history map[string]time.Duration
}

func (f *retentionFlag) String() string {
	var tenants []string
	for _, m := range []map[string]time.Duration{f.windows, f.history} {
		for t := range m {
			if !slices.Contains(tenants, t) {
				tenants = append(tenants, t)
			}
		}
	}
	slices.Sort(tenants)
	parts := make([]string, 0, len(tenants))
	for _, t := range tenants {
		p := "tenant=" + t
		if w, ok := f.windows[t]; ok {
			p += fmt.Sprintf(":idempotency=%s", w)
		}
		if w, ok := f.history[t]; ok {
			p += fmt.Sprintf(":history=%s", w)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ";")
}

func (f *retentionFlag) Type() string { return "rules" }

func (f *retentionFlag) Set(v string) error {
	for _, rule := range strings.Split(v, ";") {
		if rule = strings.TrimSpace(rule); rule == "" {
			continue
		}
		r, err := parseRetentionRule(rule)
		if err != nil {
			return err
		}
		if r.idempotency > 0 {
			if f.windows == nil {
				f.windows = map[string]time.Duration{}
			}
			f.windows[r.tenant] = r.idempotency
		}
		if r.history > 0 {
			if f.history == nil {
				f.history = map[string]time.Duration{}
			}
			f.history[r.tenant] = r.history
		}
	}
	return nil
}

type retentionRule struct {
	tenant               string
	idempotency, history time.Duration
}

func parseRetentionRule(rule string) (retentionRule, error) {
	var r retentionRule
	for _, kv := range strings.Split(rule, ":") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return r, fmt.Errorf("retention rule %q: %q is not key=value (want tenant=NAME:idempotency=72h or tenant=NAME:history=30d)", rule, kv)
		}
		switch k {
		case "tenant":
			r.tenant = v
		case "idempotency", "history":
			d, err := parseDays(v)
			if err != nil || d <= 0 {
				return r, fmt.Errorf("retention rule %q: %s=%q is not a positive duration (e.g. 72h, 30d)", rule, k, v)
			}
			if k == "history" {
				r.history = d
			} else {
				r.idempotency = d
			}
		case "history-archive":
			return r, fmt.Errorf("retention rule %q: history-archive is not available: history retention drops records (README: Retention says why); export them first with rhizon export", rule)
		default:
			return r, fmt.Errorf("retention rule %q: unknown key %q (want tenant, idempotency, history)", rule, k)
		}
	}
	if r.tenant == "" || r.idempotency == 0 && r.history == 0 {
		return r, fmt.Errorf("retention rule %q: needs tenant=NAME and idempotency=<window> and/or history=<window>", rule)
	}
	return r, nil
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
