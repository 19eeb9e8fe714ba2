package gateway

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// ActorDeployer is the optional capability of a Backend that stores
// WebAssembly modules in the cluster (cluster.Node): Admin.DeployActor.
type ActorDeployer interface {
	DeployActor(ctx context.Context, req *pb.DeployActorRequest) (*pb.DeployActorResponse, error)
}

// DeploySource is the optional capability of a Backend that knows the
// actor types deployed at run time and their owners (cluster.Node): deployed
// type -> owning tenant, "*" for a type of every tenant. The gateway hides
// a tenant's types from the others; the engine refuses their commands too
// (actor.Registry.Usable), on every replica alike.
type DeploySource interface {
	DeployedOwners() map[string]string
}

// DeployActor stores a module as a revision of an actor type (see the
// proto). The owner is decided here from the token: an admin token without
// a tenant deploys a type of every tenant (the system principal's); any
// other deploy is of one tenant in the token's scopes, its own only.
func (a adminServer) DeployActor(ctx context.Context, req *pb.DeployActorRequest) (*pb.DeployActorResponse, error) {
	s := a.s
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	d, ok := s.backend.(ActorDeployer)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "DeployActor: this node's backend cannot deploy actors (rhizon dev loads modules with --wasm-actor)")
	}
	if n := len(req.GetModule()); n > MaxModuleBytes {
		return nil, status.Errorf(codes.InvalidArgument, "deploy: the module is %d bytes; the limit is %d (build with -ldflags=-s -w to shrink it)", n, MaxModuleBytes)
	}
	fwd := &pb.DeployActorRequest{ActorType: req.GetActorType(), Revision: req.GetRevision(), Module: req.GetModule(),
		DeployedBy: id.Principal.ID}
	tenant := req.GetTenant()
	switch {
	case tenant == "" && id.Role == RoleAdmin:
		fwd.System = true
	case tenant == "":
		tenant = id.DefaultScope.Tenant
		fallthrough
	default:
		if !tenantInScopes(id, tenant) {
			return nil, status.Errorf(codes.PermissionDenied, "deploy: tenant %q is outside this token's scopes (%s); give --tenant one of them", tenant, allowedScopes(id))
		}
		fwd.Owner = tenant
		fwd.System = id.Role == RoleAdmin
	}
	if fwd.Owner == "*" || fwd.Owner == "" && !fwd.System {
		return nil, status.Error(codes.InvalidArgument, "deploy: give --tenant: this token's first scope names no single tenant")
	}
	return d.DeployActor(ctx, fwd)
}

// tenantInScopes reports whether one of id's scopes is tenant's (any
// workspace).
func tenantInScopes(id Identity, tenant string) bool {
	return slices.ContainsFunc(id.Scopes, func(sc actor.Scope) bool { return sc.Tenant == tenant && tenant != "*" })
}

// ownsType reports whether actorType was deployed by a tenant of id's
// scopes.
func (s *Server) ownsType(id Identity, actorType string) bool {
	ds, ok := s.backend.(DeploySource)
	if !ok {
		return false
	}
	owner, deployed := ds.DeployedOwners()[actorType]
	return deployed && owner != "*" && tenantInScopes(id, owner)
}

// visible reports whether a token of id may see actorType: not deployed by
// a tenant outside its scopes.
func visible(owners map[string]string, id Identity, actorType string) bool {
	owner, deployed := owners[actorType]
	return !deployed || owner == "*" || tenantInScopes(id, owner)
}

// typesFor lists the actor types tenant may use, for messages.
func (s *Server) typesFor(tenant string) []string {
	types := s.backend.Registry().Types()
	ds, ok := s.backend.(DeploySource)
	if !ok {
		return types
	}
	owners := ds.DeployedOwners()
	var out []string
	for _, t := range types {
		if o, deployed := owners[t]; !deployed || o == "*" || o == tenant {
			out = append(out, t)
		}
	}
	return out
}

// hideOthersTypes removes from a non-admin view of Status the actor types
// deployed by tenants outside id's scopes.
func (s *Server) hideOthersTypes(st *pb.StatusResponse, id Identity) {
	ds, ok := s.backend.(DeploySource)
	if !ok {
		return
	}
	owners := ds.DeployedOwners()
	st.ActorTypes = slices.DeleteFunc(slices.Clone(st.GetActorTypes()), func(t string) bool { return !visible(owners, id, t) })
	st.DeployedOwners = map[string]string{}
	for t, o := range owners {
		if visible(owners, id, t) {
			st.DeployedOwners[t] = o
		}
	}
	for _, n := range st.GetNodes() {
		revs := map[string]string{}
		for t, r := range n.GetActorRevisions() {
			if visible(owners, id, t) {
				revs[t] = r
			}
		}
		n.ActorRevisions = revs
	}
	active := map[string]string{}
	for t, r := range st.GetActiveRevisions() {
		if visible(owners, id, t) {
			active[t] = r
		}
	}
	st.ActiveRevisions = active
}

// lookup returns the behaviour of actorType or NotFound listing the types:
// the revision the cluster runs it at (RevisionSource), so the verbs and
// payloads checked here are those the engine will decide with.
//
// A type deployed by another tenant (DeploySource) is NotFound like an
// unknown one: a tenant does not learn which names others use. A deployed
// type that was never activated is NotFound too, with the command to run.
func (s *Server) lookup(actorType, tenant string) (actor.Behavior, error) {
	reg := s.backend.Registry()
	if ds, ok := s.backend.(DeploySource); ok {
		if owner, deployed := ds.DeployedOwners()[actorType]; deployed && owner != "*" && owner != tenant {
			return nil, status.Errorf(codes.NotFound, "unknown actor type %q in tenant %q; registered: %s", actorType, tenant, strings.Join(s.typesFor(tenant), ", "))
		}
	}
	if b, ok := s.shownRevision(actorType); ok {
		return b, nil
	}
	if reg.Known(actorType) {
		return nil, status.Errorf(codes.NotFound, "actor type %q is deployed but not active: run rhizon actor activate --type %s --revision R (rhizon actor list shows its revisions)", actorType, actorType)
	}
	return nil, status.Errorf(codes.NotFound, "unknown actor type %q; registered: %s", actorType, strings.Join(s.typesFor(tenant), ", "))
}
