// Package engine applies ordered log entries to a shard's state. It is the
// deterministic core of Rhizon: a pure function of (stored state, entry) that
// imports no clock, network, goroutines or global randomness, so every replica
// applying the same Raft log writes byte-identical state and returns
// byte-identical results. I/O is left to the caller (package shard) through the
// Store interface.
package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/internal/slab"
)

// Limits of one entry.
const (
	// MaxCommandsPerEntry bounds a proposer batch.
	MaxCommandsPerEntry = 4096
	// MaxTimersPerEntry bounds how many due timers one entry fires; the rest
	// fire in the next entry.
	MaxTimersPerEntry = 1024
)

// ViolationEventType is the type of the audit record of a security violation.
const ViolationEventType = "evt.security.violation"

// ReadVerb is the verb under which a gateway records a read attempt outside
// the caller's scope: it proposes the attempt, the engine's scope check fails,
// and the violation lands in the entity's audit history.
const ReadVerb = actor.ReadVerb

// ErrStore wraps a storage failure. The shard must halt: the engine cannot
// know what was written.
var ErrStore = errors.New("engine: store failure")

// Entry is one Raft log entry: a batch of commands at one logical time, or a
// tick (no commands) that only fires due timers.
type Entry struct {
	Index    uint64
	At       int64 // Unix ms stamped by the leader
	Commands []actor.Command
	// Relayed, when not zero, says the outbox relay published every row at
	// or before it; the entry deletes them on every replica, so replicas'
	// outboxes (and state hashes) stay identical.
	Relayed Position
	// Revisions maps an actor type to the code revision its commands in
	// this entry are decided with (recorded in the log by the leader). A
	// type not in it runs its base revision (actor.Registry).
	Revisions map[string]string
	// Retention maps a tenant to its idempotency window in ms of logical
	// time (retention.go); stamped by the leader, so replicas never read
	// their own settings.
	Retention map[string]int64
	// Sweep, when set, deletes expired idempotency records (retention.go).
	Sweep *Sweep
	// HistoryRetention maps a tenant to its history window in ms of
	// logical time (history_retention.go), stamped by the leader.
	HistoryRetention map[string]int64
	// HistorySweep, when set, deletes old history records
	// (history_retention.go).
	HistorySweep *HistorySweep
}

// ErrMissingRevision is wrapped by the error Apply returns, before it writes
// anything, for an entry that names an actor revision this node's registry
// does not have: the replica must wait (not apply, not skip) until it runs a
// binary that has it.
var ErrMissingRevision = errors.New("engine: actor revision missing")

// MissingRevisionError says which revision an entry needs.
type MissingRevisionError struct {
	Shard     uint32
	Index     uint64
	ActorType string
	Revision  string
	Have      []string // the revisions this node has
}

func (e *MissingRevisionError) Error() string {
	return fmt.Sprintf("shard %d needs revision %s of actor %s (entry %d; this node has %v): restart it with a binary that has it",
		e.Shard, e.Revision, e.ActorType, e.Index, e.Have)
}

func (e *MissingRevisionError) Unwrap() error { return ErrMissingRevision }

// CheckRevisions returns a *MissingRevisionError for the first revision of
// ent (by actor type) that reg lacks, or nil.
func CheckRevisions(shard uint32, reg *actor.Registry, ent *Entry) error {
	if len(ent.Revisions) == 0 {
		return nil
	}
	types := make([]string, 0, len(ent.Revisions))
	for t := range ent.Revisions { //rhizon:deterministic keys are sorted below
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		if _, ok := reg.LookupRevision(t, ent.Revisions[t]); !ok {
			return &MissingRevisionError{Shard: shard, Index: ent.Index, ActorType: t, Revision: ent.Revisions[t], Have: reg.Revisions(t)}
		}
	}
	return nil
}

// Outbox rows start with a kind byte; the rest is the encoded protobuf.
const (
	// OutboxEvent: a committed event (recordv1.Event) to publish to the events
	// stream.
	OutboxEvent byte = 'E'
	// OutboxCommand: an actor's Send (recordv1.Command) to deliver to the target
	// shard's ingress subject.
	OutboxCommand byte = 'C'
	// OutboxRejection: the audit record (recordv1.Rejection) of a rejected
	// command, at the position of its history record, to publish so that an
	// asynchronous producer learns of it. Unlike the other kinds it is not
	// fed to the state hash: it is a copy of the history record hashed at
	// the same position, and leaving it out keeps the state hash of logs
	// written before rejections were published (and of mixed-version
	// replicas during an upgrade) unchanged.
	OutboxRejection byte = 'R'
)

// Applied is what one entry produced.
type Applied struct {
	// Results has one result per command, in order. Nil when the entry was
	// already applied before (a replay after restart).
	Results []actor.Result
	// TimersFired counts timers delivered at the start of the entry.
	TimersFired int
	// Violations counts the entry's security violations; of them,
	// ViolationsCoalesced updated an existing audit record and
	// ViolationsSuppressed were over the audit's rate limit (counted only).
	Violations, ViolationsCoalesced, ViolationsSuppressed int
	// At is the logical time the entry was applied at.
	At int64
	// ResultsSwept counts the expired idempotency records the entry deleted.
	ResultsSwept int
	// HistorySwept counts the history records the entry deleted.
	HistorySwept int
}

// Engine applies entries for one shard. It is not safe for concurrent use:
// the shard's FSM calls it from Raft's apply goroutine.
type Engine struct {
	shard uint32
	// shardCount places audit streams (AuditAddress); 0 when unknown.
	shardCount uint32
	reg        *actor.Registry
	store      Store
	meta       Meta
	// relayed is where the last outbox delete ended (zero after a start or
	// a restore): only a hint for where the next one's scan begins, so it
	// does not need to be durable or part of the state hash.
	relayed Position
	// cache holds committed entity records; like relayed it is only a
	// shortcut to what the store holds.
	cache *entityCache
	// hashBuf is the applier's digest buffer, kept between entries.
	hashBuf []byte
	// mem holds the byte slices one entry writes (outbox rows, which are also
	// the history records' data, and encoded results). Apply resets it once
	// the entry's batch is committed or discarded: Batch keeps what it is
	// given only until then (see Batch), and the applier's own references
	// (applier.results) die with the entry. Nothing handed back to a caller
	// (Applied.Results) points into it, and the entity cache never does
	// (putEntity).
	mem slab.Slab
	// encoded is the applier's scratch list of a command's encoded events.
	encoded [][]byte
	// evType remembers the last event type built, since runs of one
	// command type emit the same event type over and over.
	evType struct{ actorType, name, typ string }
}

// eventType is actor.EventType(actorType, name), without building the same
// string again for a run of equal events.
func (e *Engine) eventType(actorType, name string) string {
	if m := &e.evType; m.actorType == actorType && m.name == name && m.typ != "" {
		return m.typ
	}
	typ := actor.EventType(actorType, name)
	e.evType.actorType, e.evType.name, e.evType.typ = actorType, name, typ
	return typ
}

// Option configures an Engine.
type Option func(*config)

type config struct {
	cacheEntries, cacheBytes int
	shardCount               uint32
}

// WithShardCount tells the engine the cluster's shard count, so that each
// audit stream it writes is at an address that maps to its own shard (see
// AuditAddress) and History on that address finds it.
func WithShardCount(n uint32) Option {
	return func(c *config) { c.shardCount = n }
}

// WithEntityCache bounds the engine's cache of entity records by entries and
// bytes (see DefaultCacheEntries, DefaultCacheBytes); zero disables it. The
// cache changes no result and no stored byte, only how often the store is read.
func WithEntityCache(entries, bytes int) Option {
	return func(c *config) { c.cacheEntries, c.cacheBytes = entries, bytes }
}

// New returns an engine over store, resuming from the store's applied index.
func New(shard uint32, reg *actor.Registry, store Store, opts ...Option) (*Engine, error) {
	cfg := config{cacheEntries: DefaultCacheEntries, cacheBytes: DefaultCacheBytes}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := store.Meta()
	if err != nil {
		return nil, fmt.Errorf("%w: read meta: %w", ErrStore, err)
	}
	return &Engine{shard: shard, shardCount: cfg.shardCount, reg: reg, store: store, meta: m,
		cache: newEntityCache(cfg.cacheEntries, cfg.cacheBytes)}, nil
}

// Meta returns the last applied position and state hash.
func (e *Engine) Meta() Meta { return e.meta }

// HashHex is the state hash as hex.
func (m Meta) HashHex() string { return hex.EncodeToString(m.Hash[:]) }

// Reload re-reads the meta after the store was replaced (snapshot restore).
func (e *Engine) Reload() error {
	m, err := e.store.Meta()
	if err != nil {
		return fmt.Errorf("%w: read meta: %w", ErrStore, err)
	}
	e.meta = m
	e.relayed = Position{}
	e.cache.reset()
	return nil
}

// Apply applies ent and commits its writes in one batch. An entry at or below
// the applied index was applied before a restart and is skipped. Only a store
// failure returns an error; every problem with a command is a Result.
func (e *Engine) Apply(ent *Entry) (Applied, error) {
	if ent.Index <= e.meta.Index {
		return Applied{}, nil
	}
	if err := CheckRevisions(e.shard, e.reg, ent); err != nil {
		return Applied{}, err
	}
	at := max(ent.At, e.meta.At) // logical time never goes back
	b := e.store.NewBatch()
	var rd BatchReader = e.store
	if br, ok := b.(BatchReader); ok {
		rd = br
	}
	defer e.mem.Reset(false) // the batch is committed or discarded by then
	a := &applier{
		e:         e,
		b:         b,
		rd:        rd,
		index:     ent.Index,
		revs:      ent.Revisions,
		retention: ent.Retention,
		histRet:   ent.HistoryRetention,
		at:        at,
		entities:  make(map[string]*entitySlot, len(ent.Commands)),
		cmds:      len(ent.Commands),
		results:   make(map[string][]byte, len(ent.Commands)),
		timers:    map[string]timerSlot{},
		digest:    sha256.New(),
		hb:        e.hashBuf[:0],
	}
	out := Applied{At: at}
	if ent.Relayed != (Position{}) {
		a.b.DeleteOutbox(e.relayed, ent.Relayed)
		a.hash('D', u64(ent.Relayed.Index), u64(uint64(ent.Relayed.Ordinal)))
	}
	swept, err := a.sweep(ent.Sweep)
	if err != nil {
		a.b.Discard()
		e.cache.reset()
		return Applied{}, err
	}
	out.ResultsSwept = swept
	hswept, err := a.sweepHistory(ent.HistorySweep)
	if err != nil {
		a.b.Discard()
		e.cache.reset()
		return Applied{}, err
	}
	out.HistorySwept = hswept
	fired, err := a.fireTimers()
	if err != nil {
		a.b.Discard()
		e.cache.reset()
		return Applied{}, err
	}
	out.TimersFired = fired
	out.Results = make([]actor.Result, 0, len(ent.Commands))
	for i := range ent.Commands {
		r, err := a.command(&ent.Commands[i])
		if err != nil {
			a.b.Discard()
			e.cache.reset()
			return Applied{}, err
		}
		out.Results = append(out.Results, r)
	}
	out.Violations, out.ViolationsCoalesced, out.ViolationsSuppressed = a.violations, a.violationsCoalesced, a.violationsSuppressed
	next := Meta{Index: ent.Index, At: at}
	h := sha256.New()
	h.Write(e.meta.Hash[:])
	var hdr [16]byte
	binary.BigEndian.PutUint64(hdr[:8], ent.Index)
	binary.BigEndian.PutUint64(hdr[8:], uint64(at))
	h.Write(hdr[:])
	a.flushHash()
	if cap(a.hb) <= 2*hashBufFlush { // do not keep a buffer a huge part grew
		e.hashBuf = a.hb[:0]
	}
	h.Write(a.digest.Sum(nil))
	copy(next.Hash[:], h.Sum(nil))
	a.b.SetMeta(next)
	if err := a.b.Commit(); err != nil {
		// The store may hold part of the entry: trust nothing cached.
		e.cache.reset()
		return Applied{}, fmt.Errorf("%w: commit entry %d: %w", ErrStore, ent.Index, err)
	}
	for _, s := range a.written {
		e.cache.put(s.key, s.committed.Version, s.committed.State)
	}
	e.meta = next
	if ent.Relayed != (Position{}) && ent.Relayed.After(e.relayed) {
		e.relayed = ent.Relayed
	}
	return out, nil
}

// timerSlot is the overlay of one timer within an entry: set or deleted.
type timerSlot struct {
	t   Timer
	set bool
}

// applier holds the state of applying one entry: the batch, an overlay of
// what earlier commands of the same entry wrote (so later ones see it), and the
// digest of every write for the state hash chain.
type applier struct {
	e     *Engine
	b     Batch
	rd    BatchReader // the batch's snapshot when it has one, else the store
	index uint64
	revs  map[string]string // Entry.Revisions
	// retention is Entry.Retention: tenant -> idempotency window in ms.
	retention map[string]int64
	// histRet is Entry.HistoryRetention: tenant -> history window in ms.
	histRet map[string]int64
	at      int64
	ordinal uint32
	nthCmd  uint64

	violations, violationsCoalesced, violationsSuppressed int

	entities map[string]*entitySlot
	slots    []entitySlot  // backing of entities' values, see entity
	cmds     int           // commands in the entry
	written  []*entitySlot // entities put in this entry, in first-put order
	results  map[string][]byte
	timers   map[string]timerSlot
	digest   hash.Hash
	hb       []byte // digest input not yet written to digest
	kb       []byte // scratch for map keys
}

func (a *applier) nextPos() Position {
	a.ordinal++
	return Position{Index: a.index, Ordinal: a.ordinal}
}

// hashBufFlush is how much digest input collects before it is hashed.
const hashBufFlush = 16 << 10

// hash feeds one write into the digest: a tag and length-prefixed parts.
// The bytes collect in a buffer and reach the digest in larger writes, which
// gives the same digest and keeps parts (and u64's arrays) off the heap.
func (a *applier) hash(tag byte, parts ...[]byte) {
	a.hb = append(a.hb, tag)
	for _, p := range parts {
		a.hb = binary.BigEndian.AppendUint32(a.hb, uint32(len(p)))
		a.hb = append(a.hb, p...)
	}
	if len(a.hb) >= hashBufFlush {
		a.flushHash()
	}
}

func (a *applier) flushHash() {
	a.digest.Write(a.hb)
	a.hb = a.hb[:0]
}

// u64 is v big-endian; inlined, it stays on the caller's stack.
func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// entitySlot is one entity as the entry sees it.
type entitySlot struct {
	Entity // after the entry's latest write; what later commands see
	key    string
	// committed is a private copy of what the entry last wrote, for the
	// cache once the entry commits: Entity.State goes on to later commands'
	// actors, which must not be able to change what gets cached.
	committed Entity
	written   bool
}

func (a *applier) entity(addr actor.Address, key []byte) (*entitySlot, error) {
	if s, ok := a.entities[string(key)]; ok {
		return s, nil
	}
	k, ent, ok := a.e.cache.get(key)
	if !ok {
		var err error
		if ent, err = a.rd.Entity(addr); err != nil {
			return nil, fmt.Errorf("%w: read entity %s: %w", ErrStore, addr, err)
		}
		// The read saw committed state, which only this engine changes.
		k = string(key)
		a.e.cache.put(k, ent.Version, cloneState(ent.State))
	}
	if len(a.slots) == cap(a.slots) {
		// Slots come in chunks: one allocation for many entities, and
		// pointers into a chunk stay valid when the next one starts.
		a.slots = make([]entitySlot, 0, min(max(a.cmds, 1), 256))
	}
	a.slots = append(a.slots, entitySlot{Entity: ent, key: k})
	s := &a.slots[len(a.slots)-1]
	a.entities[k] = s
	return s, nil
}

// putEntity writes the entity's new record.
func (a *applier) putEntity(s *entitySlot, addr actor.Address, key []byte, ent Entity) {
	if ib, ok := a.b.(IndexBatch); ok {
		old := s.State
		if s.written {
			old = s.committed.State // what the batch holds, whatever actors did to s.State
		}
		a.reindex(ib, addr, old, ent.State)
	}
	s.Entity = ent
	s.committed = Entity{Version: ent.Version, State: cloneState(ent.State)}
	if !s.written {
		s.written = true
		a.written = append(a.written, s)
	}
	a.b.PutEntity(addr, ent)
	a.hash('E', key, u64(ent.Version), ent.State)
}

// reindex writes the difference between the index entries of the old and
// new state of a document entity (see actor.Indexer).
func (a *applier) reindex(ib IndexBatch, addr actor.Address, old, next []byte) {
	beh, ok := a.e.reg.Lookup(addr.ActorType)
	if !ok {
		return
	}
	ix, ok := beh.(actor.Indexer)
	if !ok {
		return
	}
	before, after := ix.IndexEntries(old), ix.IndexEntries(next)
	i, j := 0, 0
	for i < len(before) || j < len(after) {
		switch {
		case j == len(after) || (i < len(before) && before[i].Field < after[j].Field):
			ib.DeleteIndex(addr, before[i])
			i++
		case i == len(before) || after[j].Field < before[i].Field:
			ib.PutIndex(addr, after[j])
			j++
		default: // the same field
			if !bytes.Equal(before[i].Value, after[j].Value) {
				ib.DeleteIndex(addr, before[i])
				ib.PutIndex(addr, after[j])
			}
			i, j = i+1, j+1
		}
	}
}

func (a *applier) storedResult(addr actor.Address, addrKey []byte, key string) ([]byte, bool, error) {
	if r, ok := a.results[string(a.resultsKey(addrKey, key))]; ok {
		return r, true, nil
	}
	r, ok, err := a.rd.Result(addr, key)
	if err != nil {
		return nil, false, fmt.Errorf("%w: read result %s: %w", ErrStore, addr, err)
	}
	return r, ok, nil
}

// resultsKey is the key of a.results, in a scratch buffer: the address key
// (self-delimiting), NUL, the idempotency key.
func (a *applier) resultsKey(addrKey []byte, key string) []byte {
	a.kb = append(append(append(a.kb[:0], addrKey...), 0), key...)
	return a.kb
}

func (a *applier) timer(addr actor.Address, name string) (Timer, bool, error) {
	if s, ok := a.timers[string(addr.Key())+"\x00"+name]; ok {
		return s.t, s.set, nil
	}
	t, ok, err := a.rd.Timer(addr, name)
	if err != nil {
		return Timer{}, false, fmt.Errorf("%w: read timer %s %s: %w", ErrStore, addr, name, err)
	}
	return t, ok, nil
}

// fireTimers delivers every timer due at the entry's time, in (at, address,
// name) order, as a system command "cmd.<type>.timer".
func (a *applier) fireTimers() (int, error) {
	due, err := a.rd.DueTimers(a.at, MaxTimersPerEntry)
	if err != nil {
		return 0, fmt.Errorf("%w: due timers: %w", ErrStore, err)
	}
	for _, t := range due {
		a.deleteTimer(t)
		payload := actor.MustJSON(actor.TimerFired{Name: t.Name, At: t.At, Payload: t.Payload})
		key := fmt.Sprintf("timer/%s/%d", t.Name, t.At)
		cmd := actor.Command{
			ID:             deterministicID("timer", t.Address.Key(), []byte(key), u64(a.index)),
			Type:           actor.CommandType(t.Address.ActorType, actor.TimerVerb),
			Address:        t.Address,
			Payload:        payload,
			IdempotencyKey: key,
			Security: actor.Security{
				Principal: actor.Principal{ID: "timer", Type: actor.PrincipalSystem},
				Scopes:    []actor.Scope{{Tenant: t.Address.Tenant, Workspace: t.Address.Workspace}},
			},
		}
		if _, err := a.internal(&cmd); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

func (a *applier) putTimer(t Timer) {
	a.timers[string(t.Address.Key())+"\x00"+t.Name] = timerSlot{t: t, set: true}
	a.b.PutTimer(t)
	a.hash('T', t.Address.Key(), []byte(t.Name), u64(uint64(t.At)), t.Payload)
}

func (a *applier) deleteTimer(t Timer) {
	a.timers[string(t.Address.Key())+"\x00"+t.Name] = timerSlot{t: t}
	a.b.DeleteTimer(t)
	a.hash('t', t.Address.Key(), []byte(t.Name), u64(uint64(t.At)))
}

// deterministicID derives a 128-bit hex id from its parts: the first half of
// sha256(kind, then each part length-prefixed).
func deterministicID(kind string, parts ...[]byte) string {
	var buf [256]byte // ids of typical parts hash without a heap allocation
	b := append(buf[:0], kind...)
	for _, p := range parts {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// EventID is the id of the event that took addr to version: stable across
// replicas, replays and re-deliveries.
func EventID(addr actor.Address, version uint64) string {
	return eventID(addr.Key(), version)
}

// eventID is EventID for an address already encoded with Key.
func eventID(addrKey []byte, version uint64) string {
	return deterministicID("event", addrKey, u64(version))
}

var marshal = proto.MarshalOptions{Deterministic: true}

func mustMarshal(m proto.Message) []byte {
	b, err := marshal.Marshal(m)
	if err != nil {
		// Marshalling our own well-formed messages cannot fail; if it does,
		// halting beats diverging.
		panic(fmt.Sprintf("engine: marshal %T: %v", m, err))
	}
	return b
}
