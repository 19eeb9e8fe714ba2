package stream

// WatchFilter selects events: a tenant and workspace (required), optionally
// an actor type and with it an entity, optionally an event type.
type WatchFilter struct {
	Tenant, Workspace, ActorType, EntityID, EventType string
	// After resumes after this events-stream sequence; 0 starts with events
	// published from now on, or with the oldest kept when FromBeginning.
	After         uint64
	FromBeginning bool
	// Rejections also selects the rejections recorded for the entities
	// (RejectionFilter); EventType then filters them by their type too.
	Rejections bool
}

// Enqueued is where SubmitAsync stored a command.
type Enqueued struct {
	Stream    string
	Sequence  uint64
	Duplicate bool
	Shard     uint32
}
