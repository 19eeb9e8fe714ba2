package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/cluster/placement"
	shardpkg "github.com/rhizon/rhizon/shard"
)

// ClusterState is what the control group decides: which nodes belong to the
// cluster and where every shard's replicas live. It is replicated by the
// control Raft group (voters on the first nodes, every other node a
// non-voter), so every node has it locally and routes with it.
type ClusterState struct {
	ClusterID string `json:"cluster_id"`
	Shards    uint32 `json:"shards"`
	// RaftGroups is how many Raft groups carry the shards (shard.GroupOf),
	// fixed at creation; 0 (maps written before groups existed, and
	// clusters created with as many groups as shards) means one per shard.
	// Placement, leader hints and every replica are per group.
	RaftGroups uint32 `json:"raft_groups,omitempty"`
	RF         int    `json:"rf"`
	// Version increases with every change; nodes compare it to notice one.
	Version uint64 `json:"version"`
	// Nodes are the members the control group knows, sorted by id.
	Nodes []NodeRecord `json:"nodes"`
	// Placement holds each Raft group's replicas, indexed by group id.
	Placement []placement.ShardReplicas `json:"placement"`
	// Leaders is a hint of each shard's leader, as the control leader last saw
	// it (every few seconds); routing tries it before guessing.
	Leaders []string `json:"leaders,omitempty"`
	// Initial is the placement the cluster was created with: those replicas
	// bootstrap their shard's Raft group; every later replica joins one.
	Initial []placement.ShardReplicas `json:"initial"`
	// Revisions maps an actor type to the code revision its commands are
	// decided with, set only by an Activate op (rhizon actor activate). A
	// type not in it runs its base revision. Shard leaders record it in
	// every entry they propose.
	Revisions map[string]string `json:"revisions,omitempty"`
	// Deployed lists the revisions deployed at run time (rhizon actor
	// deploy), sorted by type then revision; Modules holds their bytes by
	// sha256 (hex), so a module deployed twice is stored once.
	Deployed []DeployedRevision `json:"deployed,omitempty"`
	Modules  map[string][]byte  `json:"modules,omitempty"`
}

// DeployedRevision is one revision deployed at run time.
type DeployedRevision struct {
	ActorType string `json:"actor_type"`
	Revision  string `json:"revision"`
	// Owner is the tenant whose type it is; "" for every tenant's.
	Owner      string `json:"owner,omitempty"`
	Hash       string `json:"hash"`
	Size       int    `json:"size"`
	DeployedBy string `json:"deployed_by,omitempty"`
}

// Bootstraps reports whether node creates shard's Raft group (it is one of
// the shard's initial voters and the shard never moved), and with which
// voters.
func (s *ClusterState) Bootstraps(shard uint32, node string) ([]string, bool) {
	if int(shard) >= len(s.Initial) || int(shard) >= len(s.Placement) {
		return nil, false
	}
	init, now := s.Initial[shard], s.Placement[shard]
	if !slices.Equal(init.Voters, now.Voters) || len(now.Learners) > 0 || !slices.Contains(init.Voters, node) {
		return nil, false
	}
	return init.Voters, true
}

// NodeRecord is a node as the control group records it.
type NodeRecord struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft"`
	GRPCAddr string `json:"grpc"`
	HTTPAddr string `json:"http,omitempty"`
	// GossipAddr lets a restarted node find the others again.
	GossipAddr string `json:"gossip,omitempty"`
	Zone       string `json:"zone,omitempty"`
	Draining   bool   `json:"draining,omitempty"`
}

// Groups is the number of Raft groups: RaftGroups, or one per shard.
func (s *ClusterState) Groups() uint32 {
	if s.RaftGroups == 0 || s.RaftGroups > s.Shards {
		return s.Shards
	}
	return s.RaftGroups
}

// unit names what placement and Raft ids count, in messages: "shard", or
// "raft group" when groups carry several shards.
func (s *ClusterState) unit() string {
	if s.Groups() < s.Shards {
		return "raft group"
	}
	return "shard"
}

// GroupOf is the Raft group carrying shard.
func (s *ClusterState) GroupOf(shard uint32) uint32 { return shardpkg.GroupOf(shard, s.Groups()) }

// Initialized reports whether the cluster was created.
func (s *ClusterState) Initialized() bool { return s.ClusterID != "" }

// Node returns the record of id.
func (s *ClusterState) Node(id string) (NodeRecord, bool) {
	i, ok := slices.BinarySearchFunc(s.Nodes, id, func(n NodeRecord, id string) int { return cmpString(n.ID, id) })
	if !ok {
		return NodeRecord{}, false
	}
	return s.Nodes[i], true
}

// Replicas returns every node holding a replica of shard (voters then
// learners).
func (s *ClusterState) Replicas(shard uint32) []string {
	if int(shard) >= len(s.Placement) {
		return nil
	}
	p := s.Placement[shard]
	return append(slices.Clone(p.Voters), p.Learners...)
}

// LeaderHint is the last leader the control group saw for shard, or "".
func (s *ClusterState) LeaderHint(shard uint32) string {
	if int(shard) < len(s.Leaders) {
		return s.Leaders[shard]
	}
	return ""
}

// Hosts reports whether node holds a replica of shard.
func (s *ClusterState) Hosts(shard uint32, node string) bool {
	return slices.Contains(s.Replicas(shard), node)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *ClusterState) clone() *ClusterState {
	c := *s
	c.Nodes = slices.Clone(s.Nodes)
	c.Placement = cloneReplicas(s.Placement)
	c.Initial = cloneReplicas(s.Initial)
	c.Leaders = slices.Clone(s.Leaders)
	c.Revisions = maps.Clone(s.Revisions)
	c.Deployed = slices.Clone(s.Deployed)
	c.Modules = maps.Clone(s.Modules) // module bytes are never modified
	return &c
}

// controlOp is one control log entry.
type controlOp struct {
	// Init creates the cluster; refused once it exists.
	Init *ClusterState `json:"init,omitempty"`
	// Node adds or updates a node record.
	Node *NodeRecord `json:"node,omitempty"`
	// Move applies one placement step.
	Move *placement.Move `json:"move,omitempty"`
	// Leaders replaces the leader hints.
	Leaders []string `json:"leaders,omitempty"`
	// Activate switches an actor type to a code revision.
	Activate *Activation `json:"activate,omitempty"`
	// Deploy stores a module as a revision of an actor type.
	Deploy *Deployment `json:"deploy,omitempty"`
}

// Deployment carries a module through the control log.
type Deployment struct {
	DeployedRevision
	Module []byte `json:"module"`
}

// Activation is the switch-over of ActorType to Revision.
type Activation struct {
	ActorType string `json:"actor_type"`
	Revision  string `json:"revision"`
}

// errControl is returned (as the apply response) for an op the state refuses.
var errControl = errors.New("control: op refused")

// controlFSM applies control ops. Raft calls Apply, Snapshot and Restore from
// one goroutine; readers use State, which returns an immutable copy.
type controlFSM struct {
	mu      sync.RWMutex
	state   *ClusterState
	changed chan struct{} // buffered 1: something changed
}

func newControlFSM() *controlFSM {
	return &controlFSM{state: &ClusterState{}, changed: make(chan struct{}, 1)}
}

// State returns the current state. Callers must not modify it.
func (f *controlFSM) State() *ClusterState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state
}

func (f *controlFSM) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *controlFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	var op controlOp
	if err := json.Unmarshal(l.Data, &op); err != nil {
		return fmt.Errorf("%w: undecodable: %v", errControl, err)
	}
	f.mu.Lock()
	next, err := applyControlOp(f.state, &op)
	if err == nil {
		next.Version = f.state.Version + 1
		f.state = next
	}
	f.mu.Unlock()
	if err == nil {
		f.notify()
	}
	return err
}

// applyControlOp returns the state after op, or why op is refused. It never
// modifies s.
func applyControlOp(s *ClusterState, op *controlOp) (*ClusterState, error) {
	switch {
	case op.Init != nil:
		if s.Initialized() {
			return nil, fmt.Errorf("%w: cluster %s already exists", errControl, s.ClusterID)
		}
		next := op.Init.clone()
		slices.SortFunc(next.Nodes, func(a, b NodeRecord) int { return cmpString(a.ID, b.ID) })
		return next, nil
	case !s.Initialized():
		return nil, fmt.Errorf("%w: cluster not initialized", errControl)
	case op.Node != nil:
		next := s.clone()
		i, found := slices.BinarySearchFunc(next.Nodes, op.Node.ID, func(n NodeRecord, id string) int { return cmpString(n.ID, id) })
		if found {
			next.Nodes[i] = *op.Node
		} else {
			next.Nodes = slices.Insert(next.Nodes, i, *op.Node)
		}
		return next, nil
	case op.Leaders != nil:
		if len(op.Leaders) != int(s.Groups()) {
			return nil, fmt.Errorf("%w: %d leader hints for %d groups", errControl, len(op.Leaders), s.Groups())
		}
		next := s.clone()
		next.Leaders = slices.Clone(op.Leaders)
		return next, nil
	case op.Activate != nil:
		if op.Activate.ActorType == "" || op.Activate.Revision == "" {
			return nil, fmt.Errorf("%w: activate needs an actor type and a revision", errControl)
		}
		next := s.clone()
		if next.Revisions == nil {
			next.Revisions = map[string]string{}
		}
		next.Revisions[op.Activate.ActorType] = op.Activate.Revision
		return next, nil
	case op.Deploy != nil:
		return applyDeploy(s, op.Deploy)
	case op.Move != nil:
		m := op.Move
		if int(m.Shard) >= len(s.Placement) {
			return nil, fmt.Errorf("%w: shard %d does not exist", errControl, m.Shard)
		}
		next := s.clone()
		p := &next.Placement[m.Shard]
		switch m.Kind {
		case placement.AddLearner:
			if slices.Contains(p.Voters, m.Node) || slices.Contains(p.Learners, m.Node) {
				return nil, fmt.Errorf("%w: node %s already holds shard %d", errControl, m.Node, m.Shard)
			}
			p.Learners = sortedInsert(p.Learners, m.Node)
		case placement.Promote:
			i := slices.Index(p.Learners, m.Node)
			if i < 0 {
				return nil, fmt.Errorf("%w: node %s is no learner of shard %d", errControl, m.Node, m.Shard)
			}
			p.Learners = slices.Delete(p.Learners, i, i+1)
			p.Voters = sortedInsert(p.Voters, m.Node)
		case placement.RemoveVoter:
			if i := slices.Index(p.Voters, m.Node); i >= 0 {
				if len(p.Voters) == 1 {
					return nil, fmt.Errorf("%w: node %s is the last voter of shard %d", errControl, m.Node, m.Shard)
				}
				p.Voters = slices.Delete(p.Voters, i, i+1)
			} else if i := slices.Index(p.Learners, m.Node); i >= 0 {
				p.Learners = slices.Delete(p.Learners, i, i+1)
			} else {
				return nil, fmt.Errorf("%w: node %s does not hold shard %d", errControl, m.Node, m.Shard)
			}
		default:
			return nil, fmt.Errorf("%w: unknown move kind %d", errControl, m.Kind)
		}
		return next, nil
	}
	return nil, fmt.Errorf("%w: empty op", errControl)
}

func cloneReplicas(in []placement.ShardReplicas) []placement.ShardReplicas {
	out := make([]placement.ShardReplicas, len(in))
	for i, p := range in {
		out[i] = placement.ShardReplicas{Voters: slices.Clone(p.Voters), Learners: slices.Clone(p.Learners)}
	}
	return out
}

func sortedInsert(s []string, v string) []string {
	i, _ := slices.BinarySearch(s, v)
	return slices.Insert(s, i, v)
}

func (f *controlFSM) Snapshot() (raft.FSMSnapshot, error) {
	b, err := json.Marshal(f.State())
	if err != nil {
		return nil, err
	}
	return controlSnapshot(b), nil
}

func (f *controlFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s ClusterState
	if err := json.NewDecoder(rc).Decode(&s); err != nil {
		return fmt.Errorf("control: restore: %w", err)
	}
	f.mu.Lock()
	f.state = &s
	f.mu.Unlock()
	f.notify()
	return nil
}

type controlSnapshot []byte

func (s controlSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		return errors.Join(err, sink.Cancel())
	}
	return sink.Close()
}

func (controlSnapshot) Release() {}
