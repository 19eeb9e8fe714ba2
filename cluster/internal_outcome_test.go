package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/api/outcome"
	"github.com/rhizon/rhizon/shard"
)

// TestInternalOutcomeDialect: what a forwarding node reads from a peer's
// answer, in api/outcome's dialect and in the one of earlier peers (Aborted
// for "maybe applied"). Reading "not applied" where the command may have
// been applied would turn an unknown outcome into a plain no-leader error.
func TestInternalOutcomeDialect(t *testing.T) {
	srv := &internalServer{}
	answer := func(err error) (metadata.MD, error) {
		// The trailer submitStatus sets (SetTrailer needs a real stream).
		tr := metadata.MD{}
		if a := outcome.Of(err).Applied; a == outcome.NotApplied {
			tr = metadata.Pairs(outcome.Trailer, a.String())
		}
		return tr, srv.submitStatus(context.Background(), 1, err)
	}
	for _, tc := range []struct {
		name     string
		err      error
		tr       metadata.MD
		applied  bool
		sentinel error
	}{
		{name: "closed", err: fmt.Errorf("x: %w", shard.ErrClosed), applied: false, sentinel: shard.ErrClosed},
		{name: "overloaded", err: shard.ErrOverloaded, applied: false, sentinel: shard.ErrOverloaded},
		{name: "halted", err: shard.ErrHalted, applied: false, sentinel: shard.ErrHalted},
		{name: "unknown", err: shard.ErrUnknownOutcome, applied: true, sentinel: shard.ErrUnknownOutcome},
		{name: "deadline", err: context.DeadlineExceeded, applied: true, sentinel: shard.ErrUnknownOutcome},
		{name: "transport failure", err: status.Error(codes.Unavailable, "connection refused"), tr: metadata.MD{}, applied: true},
		{name: "earlier peer, maybe applied", err: status.Error(codes.Aborted, "shard: outcome unknown"), tr: metadata.MD{}, applied: true},
		{name: "trailer unknown", err: status.Error(codes.Unavailable, "lost"), tr: metadata.Pairs(outcome.Trailer, "unknown"), applied: true},
		{name: "earlier peer, not applied", err: status.Error(codes.Unavailable, "shard: closed"), tr: metadata.Pairs(outcome.Trailer, "not_applied"), applied: false},
		{name: "not leader", err: status.Error(codes.FailedPrecondition, "node n2 does not lead shard 1"), tr: metadata.MD{}, applied: false, sentinel: shard.ErrNotLeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err, tr := tc.err, tc.tr
			if tr == nil {
				tr, err = answer(tc.err)
			}
			fe := classify(err, tr)
			if fe.applied != tc.applied {
				t.Errorf("applied = %v, want %v (%v)", fe.applied, tc.applied, err)
			}
			if tc.sentinel != nil && !errors.Is(fe.err, tc.sentinel) {
				t.Errorf("err %v, want %v", fe.err, tc.sentinel)
			}
		})
	}
}
