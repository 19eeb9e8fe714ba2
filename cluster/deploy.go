package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/wasm"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Run-time deployment of WebAssembly actors (rhizon actor deploy). The
// module travels in a control log entry (Deploy) and stays in the control
// state, keyed by its sha256: the control group already replicates to
// every node, snapshots and catches up new and restarted ones, so a node
// that has the control state has every deployed module. Each node loads
// what it has not loaded yet before it reconciles its replicas
// (replicaLoop), then gossips the revision, which is what activate checks
// before a switch-over. Commands reach a deployed type only once it is
// activated: entries then name its revision, and a replica that has not
// loaded it yet waits instead of refusing the command.

// deployTimeout bounds the wait of a deploy for the live nodes to load the
// module (after that it answers, and actor list shows who has it).
const deployTimeout = 30 * time.Second

// applyDeploy returns the state with d added, or why it is refused.
func applyDeploy(s *ClusterState, d *Deployment) (*ClusterState, error) {
	if d.ActorType == "" || d.Revision == "" || len(d.Module) == 0 {
		return nil, fmt.Errorf("%w: deploy needs an actor type, a revision and a module", errControl)
	}
	sum := sha256.Sum256(d.Module)
	if h := hex.EncodeToString(sum[:]); h != d.Hash {
		return nil, fmt.Errorf("%w: deploy: module hash %s, entry says %s", errControl, h, d.Hash)
	}
	for _, have := range s.Deployed {
		if have.ActorType != d.ActorType {
			continue
		}
		if have.Owner != d.Owner {
			return nil, fmt.Errorf("%w: actor type %s belongs to another tenant", errControl, d.ActorType)
		}
		if have.Revision == d.Revision {
			if have.Hash != d.Hash {
				return nil, fmt.Errorf("%w: revision %s of %s holds another module", errControl, d.Revision, d.ActorType)
			}
			return s.clone(), nil // the same module again: nothing changes
		}
	}
	next := s.clone()
	if next.Modules == nil {
		next.Modules = map[string][]byte{}
	}
	next.Modules[d.Hash] = d.Module
	i, _ := slices.BinarySearchFunc(next.Deployed, d.DeployedRevision, cmpDeployed)
	next.Deployed = slices.Insert(next.Deployed, i, d.DeployedRevision)
	return next, nil
}

func cmpDeployed(a, b DeployedRevision) int {
	if c := cmpString(a.ActorType, b.ActorType); c != 0 {
		return c
	}
	return cmpString(a.Revision, b.Revision)
}

// deployedOwner returns the owner of actorType if it was deployed.
func deployedOwner(st *ClusterState, actorType string) (string, bool) {
	for _, d := range st.Deployed {
		if d.ActorType == actorType {
			return d.Owner, true
		}
	}
	return "", false
}

// DeployedOwners implements gateway.DeploySource: deployed actor type ->
// owning tenant, "*" for the system's.
// The gateway asks on every command: the map is built once per control
// state (which is immutable) and must not be modified.
func (n *Node) DeployedOwners() map[string]string {
	if n.controlFSM == nil {
		return nil
	}
	st := n.ClusterState()
	if c := n.owners.Load(); c != nil && c.st == st {
		return c.owners
	}
	out := map[string]string{}
	for _, d := range st.Deployed {
		out[d.ActorType] = ownerLabel(d.Owner)
	}
	n.owners.Store(&ownersCache{st: st, owners: out})
	return out
}

// ownersCache is DeployedOwners' answer for one control state.
type ownersCache struct {
	st     *ClusterState
	owners map[string]string
}

func ownerLabel(owner string) string {
	if owner == "" {
		return "*"
	}
	return owner
}

// DeployActor stores req's module as a revision of its type
// (Admin.DeployActor); req.Owner and req.System were set by the gateway
// from the caller's token. The module is loaded here first, so a module
// that cannot load is refused before it reaches the log.
func (n *Node) DeployActor(ctx context.Context, req *pb.DeployActorRequest) (*pb.DeployActorResponse, error) {
	t, rev, code := req.GetActorType(), req.GetRevision(), req.GetModule()
	switch {
	case t == "" || rev == "":
		return nil, status.Error(codes.InvalidArgument, "deploy: --type and --revision are both required")
	case len(code) == 0:
		return nil, status.Error(codes.InvalidArgument, "deploy: the module is empty; build it with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared")
	}
	if err := actor.ValidateID("actor type", t); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "deploy: %v", err)
	}
	if strings.ContainsAny(rev, ", ") {
		return nil, status.Errorf(codes.InvalidArgument, "deploy: revision %q must hold no comma or space", rev)
	}
	if _, builtin := n.cfg.Registry.Lookup(t); builtin {
		if _, isWasm := n.baseBehavior(t).(*wasm.Behavior); !isWasm {
			return nil, status.Errorf(codes.PermissionDenied, "deploy: %q is a built-in actor type; choose another name", t)
		}
	}
	if _, err := wasm.Load(ctx, t, rev, code, wasm.Config{}); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "deploy: the module does not load: %v", err)
	}
	return onControlLeader(ctx, n, "deploy", func() (*pb.DeployActorResponse, error) { return n.deployLocal(ctx, req) },
		func(c pb.InternalClient) (*pb.DeployActorResponse, error) { return c.DeployActor(ctx, req) })
}

func (n *Node) baseBehavior(t string) actor.Behavior {
	b, _ := n.cfg.Registry.Lookup(t)
	return b
}

// deployLocal checks ownership against the control state and proposes the
// module, on the control leader.
func (n *Node) deployLocal(ctx context.Context, req *pb.DeployActorRequest) (*pb.DeployActorResponse, error) {
	t, rev, code := req.GetActorType(), req.GetRevision(), req.GetModule()
	st := n.ClusterState()
	owner := req.GetOwner()
	if have, ok := deployedOwner(st, t); ok {
		if req.GetSystem() {
			owner = have // the system adds revisions to any tenant's type
		} else if have != owner {
			return nil, status.Errorf(codes.PermissionDenied, "deploy: actor type %q belongs to another tenant; choose another name", t)
		}
	} else if n.cfg.Registry.Known(t) && !req.GetSystem() {
		return nil, status.Errorf(codes.PermissionDenied, "deploy: actor type %q is every tenant's (loaded at start); only an admin token without --tenant may add revisions to it", t)
	}
	sum := sha256.Sum256(code)
	hash := hex.EncodeToString(sum[:])
	created := true
	for _, d := range st.Deployed {
		if d.ActorType == t && d.Revision == rev {
			if d.Hash != hash {
				return nil, status.Errorf(codes.AlreadyExists, "deploy: revision %s of %s is already deployed with another module (sha256 %s); deploy under a new revision", rev, t, d.Hash)
			}
			created = false
		}
	}
	if _, static := n.cfg.Registry.LookupRevision(t, rev); static && created {
		return nil, status.Errorf(codes.AlreadyExists, "deploy: revision %s of %s is loaded at start (--wasm-actor); deploy under a new revision", rev, t)
	}
	if created {
		op := controlOp{Deploy: &Deployment{DeployedRevision: DeployedRevision{
			ActorType: t, Revision: rev, Owner: owner, Hash: hash, Size: len(code), DeployedBy: req.GetDeployedBy(),
		}, Module: code}}
		if err := n.propose(op); err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return nil, status.Errorf(codes.Unavailable, "deploy: %v", err)
			}
			return nil, status.Errorf(codes.Internal, "deploy: %v", err)
		}
	}
	v := n.ClusterState().Version
	// Wait until the live nodes loaded it (they gossip it), so that an
	// activate right after deploy returns is not refused for a node that
	// is still compiling.
	deadline := time.Now().Add(deployTimeout)
	for {
		lacking := nodesLacking(n.ClusterState(), n.members(), t, rev)
		if len(lacking) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			n.log.Info("actor revision deployed", "actor_type", t, "revision", rev, "owner", owner, "sha256", hash, "bytes", len(code), "not_yet_loaded_on", lacking)
			break
		}
		time.Sleep(50 * time.Millisecond) // between reads of the gossiped revisions, not a wait for a fixed time
	}
	return &pb.DeployActorResponse{ActorType: t, Revision: rev, Hash: hash, Size: uint64(len(code)), Owner: ownerLabel(owner), MapVersion: v, Created: created}, nil
}

// DeployActor serves a peer's forwarded Admin.DeployActor.
func (s *internalServer) DeployActor(ctx context.Context, req *pb.DeployActorRequest) (*pb.DeployActorResponse, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	if s.n.control.State() != raft.Leader {
		return nil, status.Errorf(codes.Unavailable, "node %s does not lead the control group", s.n.cfg.NodeID)
	}
	return s.n.deployLocal(ctx, req)
}

// loadDeployed loads the deployed revisions of st this node has not loaded
// yet into its registry, then gossips them. Called from replicaLoop before
// the replicas are reconciled, so a (re)started node has loaded what the
// control state holds before it opens its shards.
func (n *Node) loadDeployed(st *ClusterState) {
	changed := false
	for _, d := range st.Deployed {
		key := d.ActorType + "@" + d.Revision
		if n.loaded[key] {
			continue
		}
		n.loaded[key] = true // a module that fails to load is not retried each tick
		if _, ok := n.cfg.Registry.LookupRevision(d.ActorType, d.Revision); ok {
			continue
		}
		code, ok := st.Modules[d.Hash]
		if !ok {
			n.log.Error("deployed module missing from the control state", "actor_type", d.ActorType, "revision", d.Revision, "sha256", d.Hash)
			continue
		}
		start := time.Now()
		b, err := wasm.Load(context.Background(), d.ActorType, d.Revision, code, wasm.Config{})
		if err == nil {
			err = n.cfg.Registry.AddDeployed(b, d.Owner)
		}
		if err != nil {
			n.log.Error("deployed actor revision does not load on this node", "actor_type", d.ActorType, "revision", d.Revision, "err", err)
			continue
		}
		n.log.Info("deployed actor revision loaded", "actor_type", d.ActorType, "revision", d.Revision, "owner", ownerLabel(d.Owner), "took", time.Since(start))
		changed = true
	}
	if changed && n.ml != nil {
		if err := n.ml.UpdateMeta(n.meta()); err != nil {
			n.log.Error("gossip the loaded actor revisions", "err", err)
		}
	}
}
