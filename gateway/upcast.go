package gateway

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// upcast rewrites ev, in place, as its actor type's Upcaster presents it
// (actor.UpcastEvent) and sets its schema_version (at least 1). History and
// Watch show events this way, with the revision the cluster runs (a
// WebAssembly type deployed at run time has no other); the stored event,
// and what replicas and replays compare, is never upcast. Events of a type this node does not
// have (an audit stream, an actor removed since) are shown as stored.
func (s *Server) upcast(ev *pb.Event) error {
	if ev == nil {
		return nil
	}
	ev.SchemaVersion = max(ev.SchemaVersion, 1)
	beh, ok := s.shownRevision(ev.GetAddress().GetActorType())
	if !ok {
		return nil
	}
	if _, ok := beh.(actor.Upcaster); !ok {
		return nil
	}
	a := ev.ToActor()
	up, err := actor.UpcastEvent(beh, a)
	if err != nil {
		// The actor code failed on its own stored event: nothing the
		// caller can fix, and showing the raw event as if upcast would lie.
		return status.Errorf(codes.Internal, "event %s (version %d): %v; fix the actor's Upcast", ev.GetId(), ev.GetVersion(), err)
	}
	ev.Type, ev.SchemaVersion, ev.Payload = up.Type, up.SchemaVersion, up.Payload
	return nil
}

// shownRevision is the revision of actorType the cluster runs
// (RevisionSource; a type deployed at run time has no other), else its base
// one: the one that checks commands and upcasts the events shown.
func (s *Server) shownRevision(actorType string) (actor.Behavior, bool) {
	reg := s.backend.Registry()
	if rs, ok := s.backend.(RevisionSource); ok {
		if rev := rs.ActiveRevisions()[actorType]; rev != "" {
			if b, ok := reg.LookupRevision(actorType, rev); ok {
				return b, true
			}
		}
	}
	return reg.Lookup(actorType)
}
