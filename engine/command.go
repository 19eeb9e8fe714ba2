package engine

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
)

// command applies one command. The order of checks is the contract:
// validation -> scope -> actor lookup -> idempotency -> version -> Decide ->
// egress scope -> Evolve -> writes. Nothing of a command is written until all
// checks passed, so a rejection never leaves half a command behind.
func (a *applier) command(cmd *actor.Command) (actor.Result, error) {
	a.nthCmd++
	res := actor.Result{CommandID: cmd.ID, Index: a.index}

	// Malformed commands leave no trace: there is nothing sound to record.
	// Validate also refuses what only the engine may make (the timer verb,
	// its keys), whatever path the command came by.
	if err := cmd.Validate(); err != nil {
		return rejected(res, err), nil
	}
	return a.validated(cmd, res)
}

// internal applies a command the engine made itself (a timer firing): it
// skips Validate, which refuses the engine's own verb and keys to clients.
func (a *applier) internal(cmd *actor.Command) (actor.Result, error) {
	a.nthCmd++
	return a.validated(cmd, actor.Result{CommandID: cmd.ID, Index: a.index})
}

func (a *applier) validated(cmd *actor.Command, res actor.Result) (actor.Result, error) {
	if !cmd.Security.Allows(cmd.Address.Tenant, cmd.Address.Workspace) {
		msg := fmt.Sprintf("principal %s (%s) may not act in tenant %q workspace %q",
			cmd.Security.Principal.ID, cmd.Security.Principal.Type, cmd.Address.Tenant, cmd.Address.Workspace)
		return a.violation(cmd, res, msg)
	}
	beh, ok := a.e.reg.LookupRevision(cmd.Address.ActorType, a.revs[cmd.Address.ActorType])
	// A type deployed by another tenant is unknown to this one; its owner
	// comes from the control log, so every replica refuses alike.
	if !ok || !a.e.reg.Usable(cmd.Address.ActorType, cmd.Address.Tenant) {
		return rejected(res, actor.Invalid("unknown actor type %q", cmd.Address.ActorType)), nil
	}
	if v, ok := beh.(actor.Validator); ok {
		if err := v.Validate(cmd); err != nil {
			return rejected(res, err), nil
		}
	}

	key := cmd.Address.Key()
	stored, ok, err := a.storedResult(cmd.Address, key, cmd.IdempotencyKey)
	if err != nil {
		return res, err
	}
	if ok {
		if dup, ok, err := a.duplicate(cmd, stored); ok || err != nil {
			return dup, err
		}
	}

	ent, err := a.entity(cmd.Address, key)
	if err != nil {
		return res, err
	}
	res.Version = ent.Version
	if cmd.ExpectedVersion != nil && *cmd.ExpectedVersion != ent.Version {
		res.Status, res.Reason, res.Code = actor.StatusRejected, actor.ReasonConflict, actor.CodeVersionConflict
		res.Message = fmt.Sprintf("expected version %d, entity is at version %d", *cmd.ExpectedVersion, ent.Version)
		a.recordRejection(cmd, key, &res, actor.EventType(cmd.Address.ActorType, "rejected"), ent.Version)
		a.storeResult(cmd, key, &res)
		return res, nil
	}

	ctx := actor.NewEntryContext(cmd.Address, cmd.Security, a.at, a.seed(), ent.Version, a.e.shard, a.index)
	news, derr := decide(beh, ctx, ent.State, cmd)
	sends, timerOps, reply := ctx.Effects()
	if derr == nil {
		derr = checkEffects(cmd, news, sends, timerOps)
	}
	if derr != nil {
		if r, ok := actor.AsRejection(derr); ok && r.Reason == actor.ReasonViolation {
			return a.violation(cmd, res, r.Message)
		}
		res = rejected(res, derr)
		if res.Reason == actor.ReasonBusiness {
			a.recordRejection(cmd, key, &res, actor.EventType(cmd.Address.ActorType, "rejected"), ent.Version)
			a.storeResult(cmd, key, &res)
		}
		return res, nil
	}

	// Evolve on a copy so a failing Evolve leaves nothing behind.
	state, version := ent.State, ent.Version
	events := make([]actor.Event, 0, len(news))
	for _, ne := range news {
		version++
		events = append(events, actor.Event{
			ID:            eventID(key, version),
			Type:          a.e.eventType(cmd.Address.ActorType, ne.Name),
			Address:       cmd.Address,
			Version:       version,
			Payload:       ne.Payload,
			At:            a.at,
			CommandID:     cmd.ID,
			CausationID:   cmd.CausationID,
			CorrelationID: correlation(cmd),
			TraceParent:   cmd.TraceParent,
			Principal:     cmd.Security.Principal,
			Shard:         a.e.shard,
			Index:         a.index,
			SchemaVersion: actor.StoredSchemaVersion(ne.SchemaVersion),
		})
		// Evolve the element in place: a local Event would escape to the heap.
		ev := &events[len(events)-1]
		next, err := evolve(beh, state, ev)
		if err == nil && len(next) > actor.MaxStateBytes {
			err = fmt.Errorf("state would be %d bytes; the limit is %d", len(next), actor.MaxStateBytes)
		}
		if err != nil {
			res = rejected(res, actor.Reject(actor.CodeEvolveFailed, "event %s: %v", ev.Type, err))
			a.recordRejection(cmd, key, &res, actor.EventType(cmd.Address.ActorType, "rejected"), ent.Version)
			a.storeResult(cmd, key, &res)
			return res, nil
		}
		state = next
	}

	// All checks passed: write.
	var encoded [][]byte
	if len(events) > 0 {
		encoded = append(a.e.encoded[:0], make([][]byte, len(events))...)
	}
	for i := range events {
		ev := &events[i]
		pos := a.nextPos()
		ev.Ordinal = pos.Ordinal
		// The same bytes wait in the outbox until the relay published them;
		// the history record is the audit trail and stays. The outbox row
		// is the kind byte and the event, so encode into it.
		row := a.e.mem.Make(1, 1+sizeEvent(ev))
		row[0] = OutboxEvent
		row = appendEvent(row, ev)
		data := row[1:]
		encoded[i] = data
		a.b.AppendHistory(cmd.Address, pos, HistoryEvent, data)
		a.hash('H', key, u64(pos.Index), u64(uint64(pos.Ordinal)), data)
		a.putOutboxRow(pos, row)
	}
	if len(events) > 0 {
		a.putEntity(ent, cmd.Address, key, Entity{Version: version, State: state})
	}
	for i, s := range sends {
		a.outbox(cmd, key, version, i, s)
	}
	for _, op := range timerOps {
		old, had, err := a.timer(cmd.Address, op.Name)
		if err != nil {
			return res, err
		}
		if had {
			a.deleteTimer(old)
		}
		if !op.Cancel {
			a.putTimer(Timer{Address: cmd.Address, Name: op.Name, At: op.At, Payload: op.Payload})
		}
	}
	res.Status, res.Version, res.Events, res.Reply = actor.StatusAccepted, version, events, reply
	a.storeEncodedResult(cmd, key, a.encodeResult(&res, encoded))
	clear(encoded)
	a.e.encoded = encoded[:0]
	return res, nil
}

// duplicate decodes the stored result of the command's idempotency key: the
// answer to a command that is another attempt (or another submission) of one
// already decided, unless the result expired.
func (a *applier) duplicate(cmd *actor.Command, stored []byte) (actor.Result, bool, error) {
	var pr recordv1.Result
	if err := proto.Unmarshal(stored, &pr); err != nil {
		return actor.Result{}, false, fmt.Errorf("%w: decode stored result: %w", ErrStore, err)
	}
	if a.expired(cmd.Address.Tenant, pr.At) {
		// Outside the tenant's window: a new submission (retention.go).
		return actor.Result{}, false, nil
	}
	// The same command id is another attempt of the same submission (an
	// internal retry, a redelivery, the caller's own retry): its answer is
	// the original one. Another id is another submission. Unmarshal copied
	// what it decoded, so the answer shares no memory with the entry's arena.
	dup := pr.ToActor()
	if pr.CommandId == cmd.ID {
		dup.Replay = true
	} else {
		dup.Duplicate = true
	}
	return dup, true, nil
}

// encodeResult is encodeResult in the entry's arena, with room for the
// retention stamp (stampResult).
func (a *applier) encodeResult(res *actor.Result, events [][]byte) []byte {
	n, ok := resultSize(res, events)
	if !ok {
		return encodeResult(res, events)
	}
	return appendResult(a.e.mem.Make(0, n+resultStampRoom), res, events)
}

// seed derives the command's random seed from its log position.
func (a *applier) seed() uint64 {
	return uint64(a.e.shard)<<48 ^ a.index<<12 ^ a.nthCmd
}

func correlation(cmd *actor.Command) string {
	if cmd.CorrelationID != "" {
		return cmd.CorrelationID
	}
	return cmd.ID
}

// outbox writes one actor-to-actor command with a deterministic id and
// idempotency key, so that delivering it more than once has one effect.
func (a *applier) outbox(cmd *actor.Command, srcKey []byte, version uint64, n int, s actor.Send) {
	src := cmd.Address
	id := deterministicID("send", srcKey, u64(version), u64(uint64(n)), []byte(cmd.ID))
	out := actor.Command{
		ID:             id,
		Type:           s.Type,
		Address:        s.To,
		Payload:        s.Payload,
		IdempotencyKey: "send/" + id,
		Security: actor.Security{
			Principal: actor.SenderPrincipal(src),
			Scopes:    []actor.Scope{{Tenant: src.Tenant, Workspace: src.Workspace}},
		},
		CausationID:   cmd.ID,
		CorrelationID: correlation(cmd),
		TraceParent:   cmd.TraceParent,
		TraceState:    cmd.TraceState,
	}
	a.putOutbox(a.nextPos(), OutboxCommand, mustMarshal(recordv1.FromCommand(&out)))
}

func (a *applier) putOutbox(pos Position, kind byte, data []byte) {
	row := make([]byte, 1+len(data))
	row[0] = kind
	copy(row[1:], data)
	a.putOutboxRow(pos, row)
}

// putOutboxRow writes a row that already starts with its kind byte.
func (a *applier) putOutboxRow(pos Position, row []byte) {
	a.b.PutOutbox(pos, row)
	a.hash('O', u64(pos.Index), u64(uint64(pos.Ordinal)), row)
}

func (a *applier) recordRejection(cmd *actor.Command, addrKey []byte, res *actor.Result, typ string, version uint64) {
	pos := a.nextPos()
	a.publishRejection(pos, a.writeRejection(cmd, cmd.Address, addrKey, pos, res, res.Message, typ, version))
}

func (a *applier) storeResult(cmd *actor.Command, addrKey []byte, res *actor.Result) {
	a.storeEncodedResult(cmd, addrKey, a.encodeResult(res, nil))
}

func (a *applier) storeEncodedResult(cmd *actor.Command, addrKey []byte, data []byte) {
	data = a.stampResult(cmd.Address.Tenant, data)
	a.results[string(a.resultsKey(addrKey, cmd.IdempotencyKey))] = data
	a.b.PutResult(cmd.Address, cmd.IdempotencyKey, data)
	a.hash('D', addrKey, []byte(cmd.IdempotencyKey), data)
}

// rejected fills res from a Decide error: a *Rejection keeps its reason and
// code; any other error is a business rejection with code "error".
func rejected(res actor.Result, err error) actor.Result {
	res.Status = actor.StatusRejected
	if r, ok := actor.AsRejection(err); ok {
		res.Reason, res.Code, res.Message = r.Reason, r.Code, r.Message
		return res
	}
	res.Reason, res.Code, res.Message = actor.ReasonBusiness, actor.CodeError, err.Error()
	return res
}

// checkEffects enforces the per-command limits and the egress scope: an actor
// may only send within its own tenant and workspace.
func checkEffects(cmd *actor.Command, news []actor.NewEvent, sends []actor.Send, timers []actor.TimerOp) error {
	if len(news) > actor.MaxEventsPerCommand {
		return actor.Reject(actor.CodeTooManyEvents, "Decide emitted %d events; the limit is %d", len(news), actor.MaxEventsPerCommand)
	}
	for _, ne := range news {
		if err := actor.ValidateID("event name", ne.Name); err != nil {
			return actor.Reject(actor.CodeBadEvent, "%v", err)
		}
	}
	if len(sends) > actor.MaxSendsPerCommand {
		return actor.Reject(actor.CodeTooManySends, "Decide sent %d commands; the limit is %d", len(sends), actor.MaxSendsPerCommand)
	}
	for _, s := range sends {
		if s.To.Tenant != cmd.Address.Tenant || s.To.Workspace != cmd.Address.Workspace {
			return &actor.Rejection{Reason: actor.ReasonViolation, Code: actor.CodeViolation, Message: fmt.Sprintf(
				"actor %s tried to send %s into tenant %q workspace %q outside its own scope",
				cmd.Address, s.Type, s.To.Tenant, s.To.Workspace)}
		}
		if err := s.To.Validate(); err != nil {
			return actor.Reject(actor.CodeBadSend, "send target: %v", err)
		}
		if verb, at := actor.ParseCommandType(s.Type); verb == "" || at != s.To.ActorType {
			return actor.Reject(actor.CodeBadSend, "send type %q must be cmd.%s.<verb>", s.Type, s.To.ActorType)
		}
		if len(s.Payload) > actor.MaxPayloadBytes {
			return actor.Reject(actor.CodeBadSend, "send payload is %d bytes; the limit is %d", len(s.Payload), actor.MaxPayloadBytes)
		}
	}
	if len(timers) > actor.MaxTimersPerCommand {
		return actor.Reject(actor.CodeTooManyTimers, "Decide set %d timers; the limit is %d", len(timers), actor.MaxTimersPerCommand)
	}
	for _, t := range timers {
		if err := actor.ValidateID("timer name", t.Name); err != nil {
			return actor.Reject(actor.CodeBadTimer, "%v", err)
		}
	}
	return nil
}

// decide calls the actor, turning a panic into a rejection: the panic happens
// identically on every replica, so rejecting keeps them equal and the shard
// running.
func decide(b actor.Behavior, ctx *actor.Context, state []byte, cmd *actor.Command) (evs []actor.NewEvent, err error) {
	defer func() {
		if p := recover(); p != nil {
			evs, err = nil, actor.Reject(actor.CodeActorPanic, "actor %s panicked in Decide: %v", b.Type(), p)
		}
	}()
	return b.Decide(ctx, state, cmd)
}

func evolve(b actor.Behavior, state []byte, ev *actor.Event) (next []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			next, err = nil, fmt.Errorf("actor %s panicked in Evolve: %v", b.Type(), p)
		}
	}()
	return b.Evolve(state, ev)
}
