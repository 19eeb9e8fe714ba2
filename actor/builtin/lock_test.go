package builtin

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
)

// fired is the payload the engine sends with a timer command.
func fired(name string, at int64) string {
	return string(actor.MustJSON(actor.TimerFired{Name: name, At: at}))
}

func TestLock(t *testing.T) {
	const (
		a = `{"owner":"a","ttl_ms":1000}`
		b = `{"owner":"b","ttl_ms":1000}`
	)
	runCases(t, Lock, []tcase{
		{"acquire, reacquire, refresh, release", []step{
			{now: 10_000, verb: "acquire", payload: a,
				events: []string{`acquired {"owner":"a","lease":1,"expires_at":11000}`},
				state:  `{"owner":"a","lease":1,"expires_at":11000}`,
				timers: []string{"set expiry 11000"}},
			{now: 10_500, verb: "acquire", payload: b, code: "held", msg: `lock held by "a" until 11000`},
			// The holder acquiring again extends with the same lease.
			{now: 10_600, verb: "acquire", payload: `{"owner":"a","ttl_ms":2000}`,
				events: []string{`acquired {"owner":"a","lease":1,"expires_at":12600}`},
				state:  `{"owner":"a","lease":1,"expires_at":12600}`,
				timers: []string{"set expiry 12600"}},
			{now: 11_000, verb: "refresh", payload: a,
				events: []string{`refreshed {"owner":"a","lease":1,"expires_at":12000}`},
				state:  `{"owner":"a","lease":1,"expires_at":12000}`,
				timers: []string{"set expiry 12000"}},
			{now: 11_100, verb: "refresh", payload: b, code: "not_holder", msg: `lock is held by "a", not "b"`},
			{now: 11_200, verb: "release", payload: `{"owner":"b"}`, code: "not_holder", msg: `lock is held by "a", not "b"`},
			{now: 11_300, verb: "release", payload: `{"owner":"a"}`,
				events: []string{`released {"owner":"a","lease":1}`},
				state:  `{"owner":"","lease":1,"expires_at":0}`,
				timers: []string{"cancel expiry"}},
			// Releasing a free lock is idempotent: accepted, no event, no timer op.
			{now: 11_400, verb: "release", payload: `{"owner":"a"}`, reply: `{"status":"released","held":false}`,
				state: `{"owner":"","lease":1,"expires_at":0}`, timers: []string{}},
			{now: 11_400, verb: "release", payload: `{"owner":"z"}`, reply: `{"status":"released","held":false}`, timers: []string{}},
			{now: 11_400, verb: "refresh", payload: a, code: "not_holder", msg: `lock is free, not held by "a"`},
			// The cancelled timer firing anyway (a race in the engine) is a no-op.
			{now: 12_000, verb: actor.TimerVerb, payload: fired("expiry", 12_000), system: true,
				events: nil, state: `{"owner":"","lease":1,"expires_at":0}`, timers: []string{}},
			{now: 12_100, verb: "acquire", payload: b,
				events: []string{`acquired {"owner":"b","lease":2,"expires_at":13100}`},
				timers: []string{"set expiry 13100"}},
		}},
		{"expiry by timer", []step{
			{now: 1000, verb: "acquire", payload: a,
				events: []string{`acquired {"owner":"a","lease":1,"expires_at":2000}`}},
			// expires_at is exclusive: at 2000 the lease has ended.
			{now: 2000, verb: actor.TimerVerb, payload: fired("expiry", 2000), system: true,
				events: []string{`expired {"owner":"a","lease":1}`},
				state:  `{"owner":"","lease":1,"expires_at":0}`, timers: []string{}},
			{now: 2001, verb: actor.TimerVerb, payload: fired("expiry", 2000), system: true,
				events: nil, state: `{"owner":"","lease":1,"expires_at":0}`},
			{now: 2002, verb: "release", payload: `{"owner":"a"}`, reply: `{"status":"released","held":false}`, timers: []string{}},
			{now: 2003, verb: "acquire", payload: a,
				events: []string{`acquired {"owner":"a","lease":2,"expires_at":3003}`}},
		}},
		{"stale timer after refresh is a no-op", []step{
			{now: 1000, verb: "acquire", payload: a, events: []string{`acquired {"owner":"a","lease":1,"expires_at":2000}`}},
			{now: 1500, verb: "refresh", payload: a, events: []string{`refreshed {"owner":"a","lease":1,"expires_at":2500}`}},
			{now: 2000, verb: actor.TimerVerb, payload: fired("expiry", 2000), system: true,
				events: nil, state: `{"owner":"a","lease":1,"expires_at":2500}`, timers: []string{}},
			{now: 2500, verb: actor.TimerVerb, payload: fired("expiry", 2500), system: true,
				events: []string{`expired {"owner":"a","lease":1}`}},
		}},
		{"a timer that is not ours is a no-op", []step{
			{now: 1000, verb: "acquire", payload: a, events: []string{`acquired {"owner":"a","lease":1,"expires_at":2000}`}},
			{now: 5000, verb: actor.TimerVerb, payload: fired("other", 5000), system: true,
				events: nil, state: `{"owner":"a","lease":1,"expires_at":2000}`},
			// Unknown fields in the engine's payload are tolerated.
			{now: 5000, verb: actor.TimerVerb, payload: `{"name":"expiry","at":2000,"attempt":2}`, system: true,
				events: []string{`expired {"owner":"a","lease":1}`}},
		}},
		{"acquire after expires_at before the timer fired", []step{
			{now: 1000, verb: "acquire", payload: a, events: []string{`acquired {"owner":"a","lease":1,"expires_at":2000}`}},
			{now: 1999, verb: "acquire", payload: b, code: "held", msg: `lock held by "a" until 2000`},
			{now: 2000, verb: "acquire", payload: b,
				events: []string{`expired {"owner":"a","lease":1}`, `acquired {"owner":"b","lease":2,"expires_at":3000}`},
				state:  `{"owner":"b","lease":2,"expires_at":3000}`,
				timers: []string{"set expiry 3000"}},
			// a's lease is over: a is not the holder any more.
			{now: 2100, verb: "refresh", payload: a, code: "not_holder", msg: `lock is held by "b", not "a"`},
			{now: 2100, verb: "release", payload: `{"owner":"a"}`, code: "not_holder", msg: `lock is held by "b", not "a"`},
			// a's old timer firing late does nothing to b.
			{now: 2200, verb: actor.TimerVerb, payload: fired("expiry", 2000), system: true, events: nil},
		}},
		{"the same owner after its lease ended gets a new lease", []step{
			{now: 1000, verb: "acquire", payload: a, events: []string{`acquired {"owner":"a","lease":1,"expires_at":2000}`}},
			{now: 2500, verb: "refresh", payload: a, code: "not_holder",
				msg: `lease 1 of "a" expired at 2000 (now 2500); acquire the lock again`},
			// The lease has ended, so the lock is free: releasing it changes
			// nothing, and the timer still to fire records the expiry.
			{now: 2500, verb: "release", payload: `{"owner":"a"}`, reply: `{"status":"released","held":false}`,
				state: `{"owner":"a","lease":1,"expires_at":2000}`, timers: []string{}},
			{now: 2500, verb: "acquire", payload: a,
				events: []string{`expired {"owner":"a","lease":1}`, `acquired {"owner":"a","lease":2,"expires_at":3500}`},
				state:  `{"owner":"a","lease":2,"expires_at":3500}`},
		}},
		{"never acquired: release is accepted", []step{
			{now: 5, verb: "release", payload: `{"owner":"a"}`, reply: `{"status":"released","held":false}`, timers: []string{}},
			{now: 6, verb: "refresh", payload: a, code: "not_holder", msg: `lock is free, not held by "a"`},
		}},
		{"default ttl is 5 s", []step{
			{now: 1000, verb: "acquire", payload: `{"owner":"a"}`,
				events: []string{`acquired {"owner":"a","lease":1,"expires_at":6000}`},
				timers: []string{"set expiry 6000"}},
			{now: 2000, verb: "refresh", payload: `{"owner":"a","ttl_ms":null}`,
				events: []string{`refreshed {"owner":"a","lease":1,"expires_at":7000}`},
				timers: []string{"set expiry 7000"}},
			{now: 6999, verb: "acquire", payload: `{"owner":"b"}`, code: "held", msg: `lock held by "a" until 7000`},
			{now: 7000, verb: "acquire", payload: `{"owner":"b"}`,
				events: []string{`expired {"owner":"a","lease":1}`, `acquired {"owner":"b","lease":2,"expires_at":12000}`}},
		}},
		{"the original runtime's field names", []step{
			// resource_id names the lock: the entity id (e1 in these tests).
			{now: 1000, verb: "acquire", payload: `{"resource_id":"e1","owner_id":"a","ttl_ms":1000}`,
				events: []string{`acquired {"owner":"a","lease":1,"expires_at":2000}`}},
			{now: 1100, verb: "acquire", payload: `{"resource_id":"e1","owner_id":"b"}`, code: "held", msg: `lock held by "a" until 2000`},
			{now: 1200, verb: "refresh", payload: `{"resource_id":"e1","owner_id":"a"}`,
				events: []string{`refreshed {"owner":"a","lease":1,"expires_at":6200}`}},
			{now: 1300, verb: "release", payload: `{"resource_id":"e1","owner_id":"b"}`, code: "not_holder", msg: `lock is held by "a", not "b"`},
			{now: 1400, verb: "release", payload: `{"resource_id":"e1","owner_id":"a"}`,
				events: []string{`released {"owner":"a","lease":1}`}, timers: []string{"cancel expiry"}},
			{now: 1500, verb: "release", payload: `{"resource_id":"e1","owner_id":"a"}`, reply: `{"status":"released","held":false}`},
		}},
		{"ttl bounds", []step{
			{now: 0, verb: "acquire", payload: `{"owner":"a","ttl_ms":1}`, events: []string{`acquired {"owner":"a","lease":1,"expires_at":1}`}},
			{now: 1, verb: "acquire", payload: `{"owner":"b","ttl_ms":86400000}`,
				events: []string{`expired {"owner":"a","lease":1}`, `acquired {"owner":"b","lease":2,"expires_at":86400001}`}},
			{now: 9223372036854775000, verb: "acquire", payload: `{"owner":"c","ttl_ms":86400000}`,
				events: []string{`expired {"owner":"b","lease":2}`, `acquired {"owner":"c","lease":3,"expires_at":9223372036854775807}`}},
		}},
	})
}

func TestLockInvalid(t *testing.T) {
	long := strings.Repeat("o", actor.MaxIDLen+1)
	for _, tc := range []struct{ verb, payload, msg string }{
		{"acquire", ``, `cmd.lock.acquire needs a JSON object payload like {"owner": "worker-1", "ttl_ms": 30000}`},
		{"acquire", `{"ttl_ms":1000}`, `owner is required: a non-empty string naming the holder, e.g. {"owner": "worker-1", "ttl_ms": 30000} (owner_id is accepted too)`},
		{"acquire", `{"owner":"a","owner_id":"a"}`, `owner and owner_id name the same holder; send only one of them`},
		{"acquire", `{"owner_id":""}`, `owner_id must be a non-empty string, got ""`},
		{"acquire", `{"owner_id":7}`, `owner_id must be a string, got number`},
		{"acquire", `{"owner_id":"` + long + `"}`, `owner_id is 129 bytes; the limit is 128`},
		{"acquire", `{"owner":"a","resource_id":"e2"}`, `resource_id "e2" is not this lock's id "e1": resource_id is optional and must equal the entity id the command is sent to`},
		{"acquire", `{"owner":"a","resource_id":""}`, `resource_id "" is not this lock's id "e1"`},
		{"refresh", `{"owner":"a","resource_id":"x"}`, `resource_id "x" is not this lock's id "e1"`},
		{"release", `{"owner":"a","resource_id":"x"}`, `resource_id "x" is not this lock's id "e1"`},
		{"release", `{"owner":"a","owner_id":"b"}`, `send only one of them`},
		{"acquire", `{"owner":"","ttl_ms":1000}`, `owner must be a non-empty string, got ""`},
		{"acquire", `{"owner":"` + long + `","ttl_ms":1000}`, `owner is 129 bytes; the limit is 128`},
		{"acquire", `{"owner":7,"ttl_ms":1000}`, `owner must be a string, got number`},
		{"acquire", `{"owner":"a","ttl_ms":0}`, `ttl_ms must be an integer from 1 to 86400000 (24h), got 0`},
		{"acquire", `{"owner":"a","ttl_ms":-5}`, `ttl_ms must be an integer from 1 to 86400000 (24h), got -5`},
		{"acquire", `{"owner":"a","ttl_ms":86400001}`, `got 86400001`},
		{"acquire", `{"owner":"a","ttl_ms":"1000"}`, `ttl_ms must be an integer (no fraction, no quotes) within the signed 64-bit range, got string`},
		{"acquire", `{"owner":"a","ttl_ms":1.5}`, `got number 1.5`},
		{"acquire", `{"owner":"a","ttl":1000}`, `unknown field "ttl"; cmd.lock.acquire accepts only "owner", "ttl_ms", "owner_id", "resource_id"`},
		{"refresh", `{"owner":"a","ttl_ms":0}`, `ttl_ms must be an integer from 1 to 86400000 (24h), got 0`},
		{"release", `{}`, `owner is required: a non-empty string naming the holder, e.g. {"owner": "worker-1"}`},
		{"release", `{"owner":"a","ttl_ms":5}`, `unknown field "ttl_ms"; cmd.lock.release accepts only "owner", "owner_id", "resource_id"`},
		{"release", `"a"`, `payload must be a JSON object like {"owner": "worker-1"}, got a string`},
		{actor.TimerVerb, ``, `cmd.lock.timer needs a JSON object payload`},
		{actor.TimerVerb, `{"name":5}`, `name must be a string, got number`},
		{actor.TimerVerb, `{"name":"expiry","at":"soon"}`, `at must be an integer`},
		{"steal", `{}`, `actor type "lock" has no verb "steal"; verbs: [acquire refresh release timer]`},
	} {
		t.Run(tc.verb+" "+short(tc.payload), func(t *testing.T) {
			e := newEntity(Lock())
			e.check(t, 0, step{verb: tc.verb, payload: tc.payload, code: "invalid", msg: tc.msg})
		})
	}
}

// A lease is a fencing token: it only grows, by one per acquisition.
func TestLockLeaseGrows(t *testing.T) {
	e := newEntity(Lock())
	now := int64(0)
	for i := 1; i <= 20; i++ {
		owner := fmt.Sprintf("o%d", i%3)
		out := e.exec(t, now, "acquire", `{"owner":"`+owner+`","ttl_ms":10}`)
		if out.err != nil {
			t.Fatalf("acquire %d: %v", i, out.err)
		}
		last := out.events[len(out.events)-1]
		want := fmt.Sprintf(`{"owner":%q,"lease":%d,"expires_at":%d}`, owner, i, now+10)
		if last.Name != "acquired" || string(last.Payload) != want {
			t.Fatalf("acquire %d: %s %s, want acquired %s", i, last.Name, last.Payload, want)
		}
		now += 10
	}
}
