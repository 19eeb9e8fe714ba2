package engine

import (
	"bytes"
	"math"
	"testing"

	"pgregory.net/rapid"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
)

func drawString(t *rapid.T, name string) string {
	if rapid.IntRange(0, 40).Draw(t, name+"-invalid") == 0 {
		return rapid.SampledFrom([]string{"caf\xc3", string([]byte{0xff, 'a'})}).Draw(t, name)
	}
	return rapid.OneOf(
		rapid.Just(""),
		rapid.StringMatching(`[a-z0-9./:-]{1,20}`),
		rapid.String(),              // any valid UTF-8
		rapid.StringN(100, 300, -1), // long: two-byte lengths
		rapid.Just("\u00e9\u4e16\U0001F600ok"),
	).Draw(t, name)
}

func drawBytes(t *rapid.T, name string) []byte {
	return rapid.OneOf(rapid.Just([]byte(nil)), rapid.Just([]byte{}), rapid.SliceOfN(rapid.Byte(), 1, 300)).Draw(t, name)
}

func drawU64(t *rapid.T, name string) uint64 {
	return rapid.OneOf(rapid.Just(uint64(0)), rapid.Uint64Range(1, 200), rapid.Uint64()).Draw(t, name)
}

func drawEvent(t *rapid.T) actor.Event {
	return actor.Event{
		ID: drawString(t, "id"), Type: drawString(t, "type"),
		Address: actor.Address{Tenant: drawString(t, "tenant"), Workspace: drawString(t, "ws"),
			ActorType: drawString(t, "at"), EntityID: drawString(t, "eid")},
		Version: drawU64(t, "version"), Payload: drawBytes(t, "payload"),
		At:        rapid.OneOf(rapid.Just(int64(0)), rapid.Int64(), rapid.Just(int64(math.MinInt64))).Draw(t, "at"),
		CommandID: drawString(t, "cid"), CausationID: drawString(t, "caus"), CorrelationID: drawString(t, "corr"),
		TraceParent: drawString(t, "tp"),
		Principal:   actor.Principal{ID: drawString(t, "pid"), Type: actor.PrincipalType(drawString(t, "ptype"))},
		Shard:       uint32(drawU64(t, "shard")), Index: drawU64(t, "index"), Ordinal: uint32(drawU64(t, "ordinal")),
		SchemaVersion: uint32(drawU64(t, "schema")),
	}
}

// marshalOrPanic returns proto.Marshal's bytes, or the panic it raised.
func marshalOrPanic(f func() []byte) (b []byte, panicked any) {
	defer func() { panicked = recover() }()
	return f(), nil
}

// The hand-written encodings must be the bytes proto.Marshal writes: they
// are stored and hashed. Where proto.Marshal fails (invalid UTF-8), so must they.
func TestEncodeMatchesProtoMarshal(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ev := drawEvent(t)
		want, wantPanic := marshalOrPanic(func() []byte { return mustMarshal(recordv1.FromEvent(&ev)) })
		got, gotPanic := marshalOrPanic(func() []byte { return appendEvent(nil, &ev) })
		if (wantPanic != nil) != (gotPanic != nil) || !bytes.Equal(got, want) {
			t.Fatalf("event %+v:\nappendEvent %x (panic %v)\nproto       %x (panic %v)", ev, got, gotPanic, want, wantPanic)
		}
		if wantPanic == nil && sizeEvent(&ev) != len(want) {
			t.Fatalf("sizeEvent = %d, encoding is %d bytes", sizeEvent(&ev), len(want))
		}

		res := actor.Result{
			CommandID: drawString(t, "rcid"),
			Status:    actor.Status(rapid.SampledFrom([]int32{0, 1, 2, -1, math.MaxInt32}).Draw(t, "status")),
			Reason:    actor.Reason(rapid.SampledFrom([]int32{0, 1, 2, 3, 4, -7}).Draw(t, "reason")),
			Code:      drawString(t, "code"), Message: drawString(t, "msg"),
			Version: drawU64(t, "rversion"), Index: drawU64(t, "rindex"),
			Reply: drawBytes(t, "reply"), Duplicate: rapid.Bool().Draw(t, "dup"),
			Replay: rapid.Bool().Draw(t, "replay"),
		}
		for i := range rapid.IntRange(0, 3).Draw(t, "events") {
			e := ev
			e.Version += uint64(i)
			res.Events = append(res.Events, e)
		}
		want, wantPanic = marshalOrPanic(func() []byte { return mustMarshal(recordv1.FromResult(&res)) })
		got, gotPanic = marshalOrPanic(func() []byte { return encodeResult(&res, nil) })
		if (wantPanic != nil) != (gotPanic != nil) || !bytes.Equal(got, want) {
			t.Fatalf("result %+v:\nencodeResult %x (panic %v)\nproto        %x (panic %v)", res, got, gotPanic, want, wantPanic)
		}
		if wantPanic != nil {
			return
		}
		// With the events encoded beforehand, as command() passes them.
		enc := make([][]byte, len(res.Events))
		for i := range res.Events {
			enc[i] = appendEvent(nil, &res.Events[i])
		}
		if got := encodeResult(&res, enc); !bytes.Equal(got, want) {
			t.Fatalf("result with encoded events %x, want %x", got, want)
		}
		if got := encodeResult(&res, enc); cap(got) != len(got) {
			t.Fatalf("result buffer: len %d cap %d: the size is off", len(got), cap(got))
		}
	})
}

func TestEncodeEventSizesUpFront(t *testing.T) {
	ev := actor.Event{ID: "id", Type: "evt.counter.added", Address: actor.Address{Tenant: "a", Workspace: "w", ActorType: "counter", EntityID: "c1"},
		Version: 3, Payload: []byte(`{"amount":1,"value":3}`), At: 1000, CommandID: "c", CorrelationID: "c",
		Principal: actor.Principal{ID: "alice", Type: actor.PrincipalUser}, Shard: 7, Index: 9, Ordinal: 1}
	if n := testing.AllocsPerRun(100, func() {
		b := make([]byte, 0, sizeEvent(&ev))
		_ = appendEvent(b, &ev)
	}); n > 1 {
		t.Fatalf("encoding an event allocates %v times, want 1", n)
	}
}
