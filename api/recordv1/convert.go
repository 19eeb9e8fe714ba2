package recordv1

import "github.com/rhizon/rhizon/actor"

// Conversions between the records and the actor package's plain types.
// Empty slices become nil in both directions so that a round trip is exact.

// FromAddress converts an actor address.
func FromAddress(a actor.Address) *Address {
	return &Address{Tenant: a.Tenant, Workspace: a.Workspace, ActorType: a.ActorType, EntityId: a.EntityID}
}

// ToActor converts the address; a nil address is the zero address.
func (a *Address) ToActor() actor.Address {
	if a == nil {
		return actor.Address{}
	}
	return actor.Address{Tenant: a.Tenant, Workspace: a.Workspace, ActorType: a.ActorType, EntityID: a.EntityId}
}

// FromPrincipal converts a principal.
func FromPrincipal(p actor.Principal) *Principal { return &Principal{Id: p.ID, Type: string(p.Type)} }

// ToActor converts the principal.
func (p *Principal) ToActor() actor.Principal {
	if p == nil {
		return actor.Principal{}
	}
	return actor.Principal{ID: p.Id, Type: actor.PrincipalType(p.Type)}
}

// FromCommand converts a command.
func FromCommand(c *actor.Command) *Command {
	pc := &Command{
		Id: c.ID, Type: c.Type, Address: FromAddress(c.Address), Payload: c.Payload,
		IdempotencyKey: c.IdempotencyKey, ExpectedVersion: c.ExpectedVersion,
		Principal: FromPrincipal(c.Security.Principal), CausationId: c.CausationID,
		CorrelationId: c.CorrelationID, Traceparent: c.TraceParent, Tracestate: c.TraceState,
	}
	if len(c.Security.Scopes) > 0 {
		pc.Scopes = make([]*Scope, len(c.Security.Scopes))
		for i, s := range c.Security.Scopes {
			pc.Scopes[i] = &Scope{Tenant: s.Tenant, Workspace: s.Workspace}
		}
	}
	return pc
}

// ToActor converts the command.
func (c *Command) ToActor() actor.Command {
	ac := actor.Command{
		ID: c.Id, Type: c.Type, Address: c.Address.ToActor(), Payload: c.Payload,
		IdempotencyKey: c.IdempotencyKey, ExpectedVersion: c.ExpectedVersion,
		Security:    actor.Security{Principal: c.Principal.ToActor()},
		CausationID: c.CausationId, CorrelationID: c.CorrelationId,
		TraceParent: c.Traceparent, TraceState: c.Tracestate,
	}
	if len(c.Scopes) > 0 {
		ac.Security.Scopes = make([]actor.Scope, len(c.Scopes))
		for i, s := range c.Scopes {
			ac.Security.Scopes[i] = actor.Scope{Tenant: s.Tenant, Workspace: s.Workspace}
		}
	}
	return ac
}

// FromEvent converts an event.
func FromEvent(e *actor.Event) *Event {
	return &Event{
		Id: e.ID, Type: e.Type, Address: FromAddress(e.Address), Version: e.Version,
		Payload: e.Payload, At: e.At, CommandId: e.CommandID, CausationId: e.CausationID,
		CorrelationId: e.CorrelationID, Traceparent: e.TraceParent,
		Principal: FromPrincipal(e.Principal), Shard: e.Shard, Index: e.Index, Ordinal: e.Ordinal,
		SchemaVersion: e.SchemaVersion,
	}
}

// ToActor converts the event.
func (e *Event) ToActor() actor.Event {
	return actor.Event{
		ID: e.Id, Type: e.Type, Address: e.Address.ToActor(), Version: e.Version,
		Payload: e.Payload, At: e.At, CommandID: e.CommandId, CausationID: e.CausationId,
		CorrelationID: e.CorrelationId, TraceParent: e.Traceparent,
		Principal: e.Principal.ToActor(), Shard: e.Shard, Index: e.Index, Ordinal: e.Ordinal,
		SchemaVersion: e.SchemaVersion,
	}
}

// FromResult converts a result.
func FromResult(r *actor.Result) *Result {
	pr := &Result{
		CommandId: r.CommandID, Status: Status(r.Status), Reason: Reason(r.Reason),
		Code: r.Code, Message: r.Message, Version: r.Version, Index: r.Index,
		Duplicate: r.Duplicate, Replay: r.Replay, Reply: r.Reply,
	}
	if len(r.Events) > 0 {
		pr.Events = make([]*Event, len(r.Events))
		for i := range r.Events {
			pr.Events[i] = FromEvent(&r.Events[i])
		}
	}
	return pr
}

// ToActor converts the result.
func (r *Result) ToActor() actor.Result {
	ar := actor.Result{
		CommandID: r.CommandId, Status: actor.Status(r.Status), Reason: actor.Reason(r.Reason),
		Code: r.Code, Message: r.Message, Version: r.Version, Index: r.Index,
		Duplicate: r.Duplicate, Replay: r.Replay, Reply: r.Reply,
	}
	if len(r.Events) > 0 {
		ar.Events = make([]actor.Event, len(r.Events))
		for i, e := range r.Events {
			ar.Events[i] = e.ToActor()
		}
	}
	return ar
}
