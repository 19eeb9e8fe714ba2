package actor

// The small value types and reserved names that the engine stores and the
// gateway reads. They live here, not in the engine, so that a package which
// only talks to a node (the gateway) does not link the engine's store.

// Entity is one entity's stored record.
type Entity struct {
	Version uint64
	State   []byte
}

// Position is a place in a shard's log: the raft index of the entry and the
// ordinal of the record within it.
type Position struct {
	Index   uint64
	Ordinal uint32
}

// After reports whether p comes later in the log than q.
func (p Position) After(q Position) bool {
	return p.Index > q.Index || p.Index == q.Index && p.Ordinal > q.Ordinal
}

// ReadVerb is the verb under which a gateway records a read attempt outside
// the caller's scope: it proposes the attempt, the engine's scope check fails,
// and the violation lands in the entity's audit history.
const ReadVerb = "read"

// AuditTenant, AuditWorkspace and AuditActorType name the reserved addresses
// of the audit streams of violations (the engine's AuditAddress). An operator
// reads one with History (include_rejections), with a token scoped to this
// tenant and workspace.
const (
	AuditTenant    = "_rhizon"
	AuditWorkspace = "audit"
	AuditActorType = "violations"
)
