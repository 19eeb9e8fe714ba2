package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
)

// Violations are recorded in a bounded audit stream of the offender, not in
// the history of the entity attacked: otherwise anyone could write unlimited
// permanent records into another tenant's history. The stream of principal P
// on a shard is the rejection history of a reserved address (AuditAddress),
// whose entity record holds the stream's bookkeeping. Everything is derived
// from the entry (its logical time, never the wall clock), so replicas agree.
const (
	// AuditTenant and AuditWorkspace hold the audit streams. An operator
	// reads one with History (include_rejections) on AuditAddress, with a
	// token scoped to this tenant and workspace.
	AuditTenant    = actor.AuditTenant
	AuditWorkspace = actor.AuditWorkspace
	AuditActorType = actor.AuditActorType

	// AuditWindowMs: repeats of one (principal, target, idempotency key)
	// within a window of logical time update one record and its count.
	AuditWindowMs = 60_000
	// AuditNewPerWindow: at most this many new records per principal,
	// shard and window; more violations are only counted (suppressed).
	AuditNewPerWindow = 16
	// AuditRecords: a principal's stream on a shard keeps its latest
	// records; the oldest is deleted to make room.
	AuditRecords = 64
)

// AuditAddress is the address of principal's audit stream on shard, in a
// cluster of count shards: the entity id is the principal id and a number
// chosen so the address itself maps to shard, which makes History on it read
// the shard that wrote it. Streams of one principal on every shard are
// AuditAddress(p, s, count) for s in [0, count).
func AuditAddress(principal string, shard, count uint32) actor.Address {
	return AuditAddressOf(principal, shard, func(a actor.Address) uint32 {
		if count == 0 {
			return shard
		}
		return actor.ShardOf(a, count)
	})
}

// AuditAddressOf is AuditAddress for a caller that knows the mapping of
// addresses to shards rather than the count (the relay).
func AuditAddressOf(principal string, shard uint32, shardOf func(actor.Address) uint32) actor.Address {
	base := principal
	if len(base) > actor.MaxIDLen-12 {
		sum := sha256.Sum256([]byte(principal))
		base = base[:actor.MaxIDLen-12-17] + "~" + fmt.Sprintf("%x", sum[:8])
	}
	a := actor.Address{Tenant: AuditTenant, Workspace: AuditWorkspace, ActorType: AuditActorType}
	for n := uint64(0); ; n++ {
		a.EntityID = base + "." + strconv.FormatUint(n, 10)
		if shardOf(a) == shard {
			return a
		}
	}
}

// auditState is the entity record of an audit stream.
type auditState struct {
	window     int64  // window of the latest violation
	newInWin   uint32 // records created in that window
	total      uint64 // every violation of the principal on this shard
	coalesced  uint64 // violations that updated an existing record
	suppressed uint64 // violations over the rate limit: counted only
	entries    []auditEntry
}

// auditEntry is one record of the stream, oldest first.
type auditEntry struct {
	pos     Position
	window  int64
	firstAt int64
	count   uint32
	key     [8]byte // of (target address, idempotency key)
}

const auditHeader = 8 + 4 + 8 + 8 + 8
const auditEntrySize = 12 + 8 + 8 + 4 + 8

func (s *auditState) encode() []byte {
	b := make([]byte, 0, auditHeader+len(s.entries)*auditEntrySize)
	b = binary.BigEndian.AppendUint64(b, uint64(s.window))
	b = binary.BigEndian.AppendUint32(b, s.newInWin)
	b = binary.BigEndian.AppendUint64(b, s.total)
	b = binary.BigEndian.AppendUint64(b, s.coalesced)
	b = binary.BigEndian.AppendUint64(b, s.suppressed)
	for _, e := range s.entries {
		b = binary.BigEndian.AppendUint64(b, e.pos.Index)
		b = binary.BigEndian.AppendUint32(b, e.pos.Ordinal)
		b = binary.BigEndian.AppendUint64(b, uint64(e.window))
		b = binary.BigEndian.AppendUint64(b, uint64(e.firstAt))
		b = binary.BigEndian.AppendUint32(b, e.count)
		b = append(b, e.key[:]...)
	}
	return b
}

func decodeAuditState(b []byte) (auditState, error) {
	var s auditState
	if len(b) == 0 {
		return s, nil
	}
	if len(b) < auditHeader || (len(b)-auditHeader)%auditEntrySize != 0 {
		return s, fmt.Errorf("audit state of %d bytes", len(b))
	}
	s.window = int64(binary.BigEndian.Uint64(b))
	s.newInWin = binary.BigEndian.Uint32(b[8:])
	s.total = binary.BigEndian.Uint64(b[12:])
	s.coalesced = binary.BigEndian.Uint64(b[20:])
	s.suppressed = binary.BigEndian.Uint64(b[28:])
	for p := b[auditHeader:]; len(p) > 0; p = p[auditEntrySize:] {
		var e auditEntry
		e.pos = Position{Index: binary.BigEndian.Uint64(p), Ordinal: binary.BigEndian.Uint32(p[8:])}
		e.window = int64(binary.BigEndian.Uint64(p[12:]))
		e.firstAt = int64(binary.BigEndian.Uint64(p[20:]))
		e.count = binary.BigEndian.Uint32(p[28:])
		copy(e.key[:], p[32:40])
		s.entries = append(s.entries, e)
	}
	return s, nil
}

// violation rejects the command as a violation and records it in the
// offender's audit stream. It stores no idempotency record: otherwise a
// caller without rights could poison the key space of the entity it attacked.
func (a *applier) violation(cmd *actor.Command, res actor.Result, msg string) (actor.Result, error) {
	res.Status, res.Reason, res.Code, res.Message = actor.StatusRejected, actor.ReasonViolation, actor.CodeViolation, msg
	a.violations++
	addr := AuditAddress(cmd.Security.Principal.ID, a.e.shard, a.e.shardCount)
	key := addr.Key()
	slot, err := a.entity(addr, key)
	if err != nil {
		return res, err
	}
	st, err := decodeAuditState(slot.State)
	if err != nil {
		// Only the engine writes it; a bad one is corruption.
		return res, fmt.Errorf("%w: %s: %w", ErrStore, addr, err)
	}
	win := a.at / AuditWindowMs
	h := sha256.New()
	h.Write(cmd.Address.Key())
	h.Write([]byte{0})
	h.Write([]byte(cmd.IdempotencyKey))
	var k [8]byte
	copy(k[:], h.Sum(nil))
	st.total++
	if st.window != win {
		st.window, st.newInWin = win, 0
	}
	var rec *auditEntry
	for i := range st.entries {
		if e := &st.entries[i]; e.window == win && e.key == k {
			rec = e
			break
		}
	}
	switch {
	case rec != nil:
		st.coalesced++
		a.violationsCoalesced++
		rec.count++
	case st.newInWin >= AuditNewPerWindow:
		st.suppressed++
		a.violationsSuppressed++
	default:
		st.newInWin++
		if len(st.entries) >= AuditRecords {
			old := st.entries[0]
			st.entries = append(st.entries[:0], st.entries[1:]...)
			a.b.DeleteHistory(addr, old.pos)
			a.hash('r', key, u64(old.pos.Index), u64(uint64(old.pos.Ordinal)))
		}
		st.entries = append(st.entries, auditEntry{pos: a.nextPos(), window: win, firstAt: a.at, count: 1, key: k})
		rec = &st.entries[len(st.entries)-1]
	}
	if rec != nil {
		text := msg
		if rec.count > 1 {
			text = fmt.Sprintf("%s (%d attempts with this key since %d)", msg, rec.count, rec.firstAt)
		}
		data := a.writeRejection(cmd, addr, key, rec.pos, &res, text, ViolationEventType, 0)
		if rec.count == 1 {
			// Only a new record is published: repeats only update its
			// count, so the stream gets no more than the audit keeps.
			a.publishRejection(rec.pos, data)
		}
	}
	a.putEntity(slot, addr, key, Entity{Version: slot.Version + 1, State: st.encode()})
	return res, nil
}

// writeRejection writes the audit record of a rejected command at pos in the
// history of addr (the command's own address, or an audit stream's), and
// returns its bytes.
func (a *applier) writeRejection(cmd *actor.Command, addr actor.Address, addrKey []byte, pos Position, res *actor.Result, msg, typ string, version uint64) []byte {
	rj := &recordv1.Rejection{
		Type: typ, CommandId: cmd.ID, CommandType: cmd.Type, Address: recordv1.FromAddress(cmd.Address),
		Reason: recordv1.Reason(res.Reason), Code: res.Code, Message: msg, At: a.at,
		Principal: recordv1.FromPrincipal(cmd.Security.Principal), IdempotencyKey: cmd.IdempotencyKey,
		ExpectedVersion: cmd.ExpectedVersion, ActualVersion: version,
		CausationId: cmd.CausationID, CorrelationId: correlation(cmd), Traceparent: cmd.TraceParent,
		Shard: a.e.shard, Index: pos.Index, Ordinal: pos.Ordinal,
	}
	data := mustMarshal(rj)
	a.b.AppendHistory(addr, pos, HistoryRejection, data)
	a.hash('R', addrKey, u64(pos.Index), u64(uint64(pos.Ordinal)), data)
	return data
}

// publishRejection puts the rejection record written at pos into the outbox
// for the relay (OutboxRejection; not hashed, see there).
func (a *applier) publishRejection(pos Position, data []byte) {
	row := make([]byte, 1+len(data))
	row[0] = OutboxRejection
	copy(row[1:], data)
	a.b.PutOutbox(pos, row)
}
