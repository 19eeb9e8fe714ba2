package builtin

import (
	"math"

	"github.com/rhizon/rhizon/actor"
)

// LockType is the actor type of the lease lock.
const LockType = "lock"

// LockTimer is the name of the timer a lock sets for the end of its lease.
const LockTimer = "expiry"

// MaxLockTTL is the longest lease, in milliseconds (24 hours).
const MaxLockTTL = 86_400_000

// DefaultLockTTL is the lease length, in milliseconds, of an acquire or
// refresh without ttl_ms (the original runtime's default). It is a constant of
// the code, not a node setting: every replica decides with it, so a per-node
// value could make replicas of one shard disagree. Changing it is a new
// Revision.
const DefaultLockTTL = 5_000

// LockState is the state of a lock. The lock is held iff Owner != "" and the
// command's logical time (Context.Now) is before ExpiresAt. Lease is the
// fencing token of the latest acquisition: it grows by one each time the lock
// goes from free (or expired) to held.
type LockState struct {
	Owner     string `json:"owner"`
	Lease     uint64 `json:"lease"`
	ExpiresAt int64  `json:"expires_at"` // Unix ms
}

// LockLease is the payload of evt.lock.acquired and evt.lock.refreshed.
type LockLease struct {
	Owner     string `json:"owner"`
	Lease     uint64 `json:"lease"`
	ExpiresAt int64  `json:"expires_at"`
}

// LockEnded is the payload of evt.lock.released and evt.lock.expired.
type LockEnded struct {
	Owner string `json:"owner"`
	Lease uint64 `json:"lease"`
}

// The payloads also take the original runtime's names: owner_id for owner,
// and resource_id, which names the lock and must be its entity id.
type lockLeasePayload struct {
	Owner      *string `json:"owner"`
	TTLMs      *int64  `json:"ttl_ms"`
	OwnerID    *string `json:"owner_id"`
	ResourceID *string `json:"resource_id"`
}

type lockOwnerPayload struct {
	Owner      *string `json:"owner"`
	OwnerID    *string `json:"owner_id"`
	ResourceID *string `json:"resource_id"`
}

// LockReleasedFree is the reply of a release that found the lock free (never
// acquired, released, or its lease ended): accepted, with no event.
const LockReleasedFree = `{"status":"released","held":false}`

var (
	lockVerbs        = []string{"acquire", "refresh", "release", actor.TimerVerb}
	evtLockAcquired  = actor.EventType(LockType, "acquired")
	evtLockRefreshed = actor.EventType(LockType, "refreshed")
	evtLockReleased  = actor.EventType(LockType, "released")
	evtLockExpired   = actor.EventType(LockType, "expired")
)

// Lock returns the lease lock behaviour. Times are Unix ms of the command's
// logical time (Context.Now).
//
//	cmd.lock.acquire {"owner": "w1", "ttl_ms": 30000}   ttl_ms an integer in [1, 86400000],
//	                                                     DefaultLockTTL when absent
//	  free:                   -> evt.lock.acquired {"owner", "lease": lease+1, "expires_at": now+ttl_ms}
//	  lease ended, no timer yet: evt.lock.expired {"owner": old, "lease": old}, then acquired as above
//	  held by the same owner: -> evt.lock.acquired {"owner", "lease": same, "expires_at": now+ttl_ms}
//	  held by another owner:  rejects "held"
//	  Every acquired (re)sets the timer "expiry" to fire at expires_at.
//	cmd.lock.refresh {"owner": "w1", "ttl_ms": 30000}
//	  -> evt.lock.refreshed {"owner", "lease", "expires_at": now+ttl_ms}, and resets the timer
//	  rejects "not_holder" unless owner holds the lock now
//	cmd.lock.release {"owner": "w1"}
//	  -> evt.lock.released {"owner", "lease"}, and cancels the timer
//	  free now: no event, reply LockReleasedFree (releasing is idempotent)
//	  rejects "not_holder" if another owner holds the lock now
//	cmd.lock.timer   actor.TimerFired, sent by the engine
//	  -> evt.lock.expired {"owner", "lease"} if the lease has ended (expires_at <= now);
//	     otherwise no event (refreshed, released or re-acquired since)
//
// Every verb but timer also takes the original runtime's names: "owner_id"
// for "owner" (one of the two) and "resource_id", which must equal the
// entity id.
func Lock() actor.Behavior {
	return actor.Define(actor.Definition[LockState]{
		Name:     LockType,
		Revision: Revision,
		Commands: map[string]actor.Handler[LockState]{
			"acquire":       lockAcquire,
			"refresh":       lockRefresh,
			"release":       lockRelease,
			actor.TimerVerb: lockTimer,
		},
		Validate: validateLock,
		Apply:    applyLock,
	})
}

func validateLock(cmd *actor.Command) error {
	var err error
	switch cmd.Verb() {
	case "acquire", "refresh":
		_, _, err = parseLockLease(cmd)
	case "release":
		_, err = parseLockOwner(cmd)
	case actor.TimerVerb:
		_, err = parseTimer(cmd)
	default:
		err = unknownVerb(LockType, cmd, lockVerbs)
	}
	return err
}

// checkOwner returns the holder named by owner or its alias owner_id, and
// checks resource_id against the lock's entity id.
func checkOwner(cmd *actor.Command, owner, ownerID, resourceID *string, example string) (string, error) {
	if resourceID != nil && *resourceID != cmd.Address.EntityID {
		return "", actor.Invalid("resource_id %q is not this lock's id %q: resource_id is optional and must equal the entity id the command is sent to", *resourceID, cmd.Address.EntityID)
	}
	field := "owner"
	if ownerID != nil {
		if owner != nil {
			return "", actor.Invalid("owner and owner_id name the same holder; send only one of them")
		}
		field, owner = "owner_id", ownerID
	}
	if owner == nil {
		return "", actor.Invalid("owner is required: a non-empty string naming the holder, e.g. %s (owner_id is accepted too)", example)
	}
	if *owner == "" {
		return "", actor.Invalid("%s must be a non-empty string, got \"\"", field)
	}
	if len(*owner) > actor.MaxIDLen {
		return "", actor.Invalid("%s is %d bytes; the limit is %d", field, len(*owner), actor.MaxIDLen)
	}
	return *owner, nil
}

func parseLockLease(cmd *actor.Command) (owner string, ttl int64, err error) {
	const example = `{"owner": "worker-1", "ttl_ms": 30000}`
	var p lockLeasePayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return "", 0, err
	}
	if owner, err = checkOwner(cmd, p.Owner, p.OwnerID, p.ResourceID, example); err != nil {
		return "", 0, err
	}
	if p.TTLMs == nil {
		return owner, DefaultLockTTL, nil
	}
	if *p.TTLMs < 1 || *p.TTLMs > MaxLockTTL {
		return "", 0, actor.Invalid("ttl_ms must be an integer from 1 to %d (24h), got %d", MaxLockTTL, *p.TTLMs)
	}
	return owner, *p.TTLMs, nil
}

func parseLockOwner(cmd *actor.Command) (string, error) {
	const example = `{"owner": "worker-1"}`
	var p lockOwnerPayload
	if err := decodePayload(cmd, &p, example, false, false); err != nil {
		return "", err
	}
	return checkOwner(cmd, p.Owner, p.OwnerID, p.ResourceID, example)
}

// parseTimer decodes the engine's timer payload. Unknown fields are allowed so
// that the engine may add some.
func parseTimer(cmd *actor.Command) (actor.TimerFired, error) {
	var t actor.TimerFired
	err := decodePayload(cmd, &t, `{"name": "expiry", "at": 1700000000000}`, false, true)
	return t, err
}

// held reports whether the lock is held at now.
func (s *LockState) held(now int64) bool { return s.Owner != "" && now < s.ExpiresAt }

// lapsed reports whether a lease has ended without an expired event yet.
func (s *LockState) lapsed(now int64) bool { return s.Owner != "" && now >= s.ExpiresAt }

// deadline is now+ttl, saturating at the largest int64.
func deadline(now, ttl int64) int64 {
	if now > math.MaxInt64-ttl {
		return math.MaxInt64
	}
	return now + ttl
}

func notHolder(s *LockState, owner string, now int64) error {
	switch {
	case s.held(now):
		return actor.Reject(actor.CodeNotHolder, "lock is held by %q, not %q", s.Owner, owner)
	case s.Owner == owner:
		return actor.Reject(actor.CodeNotHolder, "lease %d of %q expired at %d (now %d); acquire the lock again", s.Lease, owner, s.ExpiresAt, now)
	}
	return actor.Reject(actor.CodeNotHolder, "lock is free, not held by %q", owner)
}

func lockAcquire(ctx *actor.Context, s *LockState, cmd *actor.Command) ([]actor.NewEvent, error) {
	owner, ttl, err := parseLockLease(cmd)
	if err != nil {
		return nil, err
	}
	now := ctx.Now()
	exp := deadline(now, ttl)
	if s.held(now) {
		if s.Owner != owner {
			return nil, actor.Reject(actor.CodeHeld, "lock held by %q until %d", s.Owner, s.ExpiresAt)
		}
		ctx.SetTimer(LockTimer, exp, nil)
		return []actor.NewEvent{{
			Name:    "acquired",
			Payload: actor.MustJSON(LockLease{Owner: owner, Lease: s.Lease, ExpiresAt: exp}),
		}}, nil
	}
	var evs []actor.NewEvent
	if s.lapsed(now) { // the expiry timer has not fired yet: record the end first
		evs = append(evs, actor.NewEvent{
			Name:    "expired",
			Payload: actor.MustJSON(LockEnded{Owner: s.Owner, Lease: s.Lease}),
		})
	}
	ctx.SetTimer(LockTimer, exp, nil)
	return append(evs, actor.NewEvent{
		Name:    "acquired",
		Payload: actor.MustJSON(LockLease{Owner: owner, Lease: s.Lease + 1, ExpiresAt: exp}),
	}), nil
}

func lockRefresh(ctx *actor.Context, s *LockState, cmd *actor.Command) ([]actor.NewEvent, error) {
	owner, ttl, err := parseLockLease(cmd)
	if err != nil {
		return nil, err
	}
	now := ctx.Now()
	if !s.held(now) || s.Owner != owner {
		return nil, notHolder(s, owner, now)
	}
	exp := deadline(now, ttl)
	ctx.SetTimer(LockTimer, exp, nil)
	return []actor.NewEvent{{
		Name:    "refreshed",
		Payload: actor.MustJSON(LockLease{Owner: owner, Lease: s.Lease, ExpiresAt: exp}),
	}}, nil
}

func lockRelease(ctx *actor.Context, s *LockState, cmd *actor.Command) ([]actor.NewEvent, error) {
	owner, err := parseLockOwner(cmd)
	if err != nil {
		return nil, err
	}
	now := ctx.Now()
	if !s.held(now) {
		// Already free: the caller's goal holds. A lapsed lease keeps its
		// timer, whose firing records the expiry.
		ctx.Reply([]byte(LockReleasedFree))
		return nil, nil
	}
	if s.Owner != owner {
		return nil, notHolder(s, owner, now)
	}
	ctx.CancelTimer(LockTimer)
	return []actor.NewEvent{{
		Name:    "released",
		Payload: actor.MustJSON(LockEnded{Owner: owner, Lease: s.Lease}),
	}}, nil
}

func lockTimer(ctx *actor.Context, s *LockState, cmd *actor.Command) ([]actor.NewEvent, error) {
	t, err := parseTimer(cmd)
	if err != nil {
		return nil, err
	}
	if t.Name != LockTimer || !s.lapsed(ctx.Now()) {
		return nil, nil // refreshed or released since, or not our timer: nothing to do
	}
	return []actor.NewEvent{{
		Name:    "expired",
		Payload: actor.MustJSON(LockEnded{Owner: s.Owner, Lease: s.Lease}),
	}}, nil
}

func applyLock(s *LockState, ev *actor.Event) error {
	switch ev.Type {
	case evtLockAcquired, evtLockRefreshed:
		var e LockLease
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Owner, s.Lease, s.ExpiresAt = e.Owner, e.Lease, e.ExpiresAt
		return nil
	case evtLockReleased, evtLockExpired:
		var e LockEnded
		if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Owner, s.ExpiresAt = "", 0
		return nil
	}
	return unknownEvent(ev)
}
