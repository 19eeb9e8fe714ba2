// Package cluster runs a Rhizon node: its stores, the multiplexed Raft
// listener, memberlist membership, the control group that owns the shard map,
// the shard replicas the map places on this node, routing and forwarding to
// shard leaders, and (on the control leader) placement and rebalancing.
// Node keeps the lifecycle and composes the parts: a replicaSet (the local
// replicas), a router (routing and forwarding) and a rebalancer (moves of
// replicas and leaderships).
//
// A single node is the same code with one member: it bootstraps a control
// group of one and places every shard on itself.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/cluster/membership"
	"github.com/rhizon/rhizon/cluster/raftmux"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/logutil"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

// Defaults.
const (
	DefaultShards = 64
	MaxShards     = 4096
	DefaultRF     = 3
)

// Config configures a node.
type Config struct {
	NodeID  string
	DataDir string
	// Shards is the fixed shard count of a cluster this node creates; a node
	// that joins takes the cluster's.
	Shards uint32
	// RaftGroups is how many Raft groups carry the shards of a cluster this
	// node creates (shard.GroupOf); 0 means one per shard. Fixed at creation
	// like Shards.
	RaftGroups uint32
	RF         int // replication factor, default 3 (capped by the node count)
	Registry   *actor.Registry
	Logger     *slog.Logger
	Version    string
	Zone       string

	// RaftAddr is the multiplexed Raft listener (all shards and the control
	// group); RaftAdvertise what peers dial, when different.
	RaftAddr      string
	RaftAdvertise string
	// GossipAddr is memberlist's TCP+UDP address; GossipAdvertise likewise.
	GossipAddr      string
	GossipAdvertise string
	// GRPCAddr and HTTPAddr are this node's advertised gateway addresses
	// (peers forward to GRPCAddr).
	GRPCAddr string
	HTTPAddr string
	NATSAddr string
	// Join lists gossip addresses of existing members.
	Join []string
	// BootstrapExpect creates a new cluster once this many nodes are alive:
	// the one with the lowest id bootstraps the control group. 0 means only
	// join an existing cluster. A node with existing state never bootstraps.
	BootstrapExpect int
	// ControlVoters is how many nodes vote in the control group (default 3;
	// 5 survives two failures). The others follow it as non-voters.
	ControlVoters int
	// ClusterSecret authenticates node-to-node calls.
	ClusterSecret string
	// RaftAcceptUnauthenticated lets the Raft port take connections from
	// nodes older than the authenticated mux header, and speak their header
	// to them: for a rolling upgrade from such a version only.
	RaftAcceptUnauthenticated bool
	// TLS, when set, wraps the Raft connections in TLS (MuxConfig.TLS) and
	// makes the calls to the other nodes' gateways (forwarding, the internal
	// API) TLS: its Certificates are this node's, its RootCAs verify the
	// peers. Nil: plaintext.
	TLS *tls.Config
	// DeadAfter is how long a node may be dead before its replicas are
	// replaced elsewhere.
	DeadAfter time.Duration
	// RebalanceInterval paces the control leader's placement loop; each round
	// makes at most one placement step and one leadership transfer.
	RebalanceInterval time.Duration
	// FastGossip tunes memberlist for loopback tests.
	FastGossip bool

	// ShardTemplate holds the Raft and group-commit tuning applied to every
	// shard (ID, NodeID, stores, Dir and Transport are filled in).
	ShardTemplate shard.Config
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RF == 0 {
		c.RF = DefaultRF
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	if c.ControlVoters == 0 {
		c.ControlVoters = 3
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = 30 * time.Second
	}
	if c.RebalanceInterval == 0 {
		c.RebalanceInterval = 500 * time.Millisecond
	}
	if c.RaftAddr == "" {
		c.RaftAddr = "127.0.0.1:0"
	}
	if c.GossipAddr == "" {
		c.GossipAddr = "127.0.0.1:0"
	}
	if c.BootstrapExpect == 0 && len(c.Join) == 0 {
		c.BootstrapExpect = 1
	}
}

// Validate reports the first bad setting.
func (c *Config) Validate() error {
	if err := actor.ValidateID("node id", c.NodeID); err != nil {
		return err
	}
	switch {
	case c.DataDir == "":
		return errors.New("cluster: DataDir is required")
	case c.Shards > MaxShards:
		return fmt.Errorf("cluster: shard count %d must be between 1 and %d", c.Shards, MaxShards)
	case c.RaftGroups > c.Shards:
		return fmt.Errorf("cluster: %d Raft groups for %d shards: a group carries at least one shard; set at most %d", c.RaftGroups, c.Shards, c.Shards)
	case c.Registry == nil:
		return errors.New("cluster: Registry is required")
	case c.RF < 1 || c.RF > 7:
		return fmt.Errorf("cluster: replication factor %d must be between 1 and 7", c.RF)
	case c.ControlVoters < 1 || c.ControlVoters > 7:
		return fmt.Errorf("cluster: control voters %d must be between 1 and 7", c.ControlVoters)
	case c.BootstrapExpect < 0:
		return fmt.Errorf("cluster: bootstrap-expect %d must not be negative", c.BootstrapExpect)
	}
	return nil
}

// identity is persisted in the data directory so a restart is the same node
// of the same cluster.
type identity struct {
	NodeID string `json:"node_id"`
}

// Node hosts shard replicas and routes requests to them.
type Node struct {
	cfg    Config
	log    *slog.Logger
	state  *storage.DB
	raftDB *storage.RaftDB
	mux    *raftmux.Mux
	ml     *membership.Membership
	usage  usageCache // TenantBytes' per-shard measurements

	control      *raft.Raft
	controlFSM   *controlFSM
	controlTrans *raftmux.GroupTransport

	replicas *replicaSet

	router     *router
	rebalancer *rebalancer
	metrics    metric.Registration
	peers      *peerPool
	draining   atomic.Bool
	// loaded holds the deployed revisions (type@revision) loadDeployed
	// handled; only replicaLoop touches it.
	loaded map[string]bool
	owners atomic.Pointer[ownersCache]
	// docMismatch holds the members whose document types differ (docTypesLoop).
	docMismatch atomic.Pointer[[]string]
	// republisher serves RepublishEvents once the ingress runs (SetRepublisher).
	republisher republisherBox
	// replays admits the replays running on this node (replay.go).
	replays replayGate
	// probe adds what other components know of a local replica to its
	// status (the ingress consumer and relay of the shards it leads).
	probe   atomic.Pointer[func(*pb.ShardStatus)]
	stop    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.Once
	// serving is closed by StopServing: the streams peers keep open to this
	// node (ForwardStream) end.
	serving     chan struct{}
	stopServing sync.Once
}

// StopServing ends the node-to-node streams that peers keep open to this
// node (their ForwardStreams), after answering the forwards each took; the
// peers reopen them elsewhere or to this node's successor. Call it before a
// graceful stop of the gRPC server, which would otherwise wait for the peers
// to hang up. Close calls it too.
func (n *Node) StopServing() { n.stopServing.Do(func() { close(n.serving) }) }

// Open opens (or creates) the node's data directory, starts the Raft
// listener, the control group and membership, and begins placing replicas.
func Open(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: data dir: %w", err)
	}
	if err := checkIdentity(cfg); err != nil {
		return nil, err
	}
	n := &Node{
		loaded: map[string]bool{},
		cfg:    cfg, log: cfg.Logger.With("node", cfg.NodeID),
		stop: make(chan struct{}), serving: make(chan struct{}),
	}
	n.peers = newPeerPool(cfg.ClusterSecret, cfg.TLS)
	forwards, err := n.newForwardStats()
	if err != nil {
		return nil, err
	}
	n.router = &router{
		nodeID: cfg.NodeID, grpcAddr: cfg.GRPCAddr, shards: cfg.Shards,
		state: n.ClusterState, members: n.members, peers: n.peers, forwards: forwards,
	}
	n.rebalancer = &rebalancer{
		log: n.log, deadAfter: cfg.DeadAfter, router: n.router,
		propose: n.propose, status: n.Status, members: n.members,
	}
	if err := n.open(); err != nil {
		_ = n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) open() error {
	var err error
	// Every group's replicas write the same keys together: a new state
	// database draws its memtable size, so that they do not all flush at once.
	if n.state, err = storage.Open(filepath.Join(n.cfg.DataDir, "state"), storage.Options{Logger: n.log, SpreadMemTable: true}); err != nil {
		return err
	}
	n.log.Debug("state database open", "memtable_bytes", n.state.MemTableSize())
	if n.raftDB, err = storage.OpenRaft(filepath.Join(n.cfg.DataDir, "raft"), storage.Options{Logger: n.log}); err != nil {
		return err
	}
	// Raft heartbeats every tenth to fifth of HeartbeatTimeout; lingering a
	// fiftieth of it for company keeps them well inside the leader lease.
	ht := n.cfg.ShardTemplate.HeartbeatTimeout
	if ht <= 0 {
		ht = raft.DefaultConfig().HeartbeatTimeout
	}
	if n.mux, err = raftmux.Listen(raftmux.Config{BindAddr: n.cfg.RaftAddr, AdvertiseAddr: n.cfg.RaftAdvertise, Secret: n.cfg.ClusterSecret,
		AcceptUnauthenticated: n.cfg.RaftAcceptUnauthenticated, TLS: n.cfg.TLS, Logger: n.log, HeartbeatLinger: ht / 50}); err != nil {
		return err
	}
	n.replicas = newReplicaSet(&n.cfg, n.log, n.state, n.raftDB, n.mux)
	n.replicas.revisions = n.activeRevisions
	n.router.replicas = n.replicas
	if err := n.openControl(); err != nil {
		return err
	}
	n.ml, err = membership.New(membership.Config{
		Meta: n.meta(), BindAddr: n.cfg.GossipAddr, AdvertiseAddr: n.cfg.GossipAdvertise,
		Logger: n.log, Fast: n.cfg.FastGossip, SecretKey: membership.Key(n.cfg.ClusterSecret),
	})
	if err != nil {
		return err
	}
	if n.metrics, err = n.registerMetrics(); err != nil {
		return err
	}

	n.wg.Add(5)
	go n.docTypesLoop()
	go n.joinLoop()
	go n.bootstrapLoop()
	go n.replicaLoop()
	go n.controllerLoop()
	return nil
}

// joinLoop keeps gossip connected: it joins the configured members until
// one answers (nodes of a new cluster start in any order), and afterwards
// rejoins any node of the cluster map that gossip does not see alive, so a
// restarted node, or both sides of a healed partition, find each other again
// (memberlist itself never retries a node it declared dead).
func (n *Node) joinLoop() {
	defer n.wg.Done()
	joined := len(n.cfg.Join) == 0
	backoff := 200 * time.Millisecond
	for {
		alive := map[string]bool{}
		for _, m := range n.ml.Members() {
			alive[m.Meta.ID] = m.State == membership.MemberAlive
		}
		var targets []string
		if !joined {
			targets = append(targets, n.cfg.Join...)
		}
		for _, rec := range n.ClusterState().Nodes {
			if rec.ID != n.cfg.NodeID && !alive[rec.ID] && rec.GossipAddr != "" {
				targets = append(targets, rec.GossipAddr)
			}
		}
		if len(targets) > 0 {
			if k, err := n.ml.Join(targets); err == nil || k > 0 {
				joined = true
				backoff = 200 * time.Millisecond
			} else if backoff >= 3*time.Second {
				n.log.Debug("join failed; retrying", "targets", targets, "err", err)
			}
		}
		select {
		case <-n.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 3*time.Second)
	}
}

func (n *Node) meta() membership.NodeMeta {
	actors := map[string]string{}
	for _, t := range n.cfg.Registry.Types() {
		// Every revision the node can decide with, base first: the
		// control leader compares them before a switch-over.
		actors[t] = strings.Join(n.cfg.Registry.Revisions(t), ",")
	}
	return membership.NodeMeta{
		ID: n.cfg.NodeID, RaftAddr: string(n.mux.Addr()), GRPCAddr: n.cfg.GRPCAddr, HTTPAddr: n.cfg.HTTPAddr,
		NATSAddr: n.cfg.NATSAddr, Zone: n.cfg.Zone, Actors: actors, Draining: n.draining.Load(),
	}
}

// Drain implements gateway.Backend: node id announces that it is draining (in
// its gossiped metadata), and the control leader moves its replicas and
// leaderships away. It is asked through the node itself so the flag survives
// in the one place that knows it is being stopped.
func (n *Node) Drain(ctx context.Context, id string, on bool) error {
	if id == n.cfg.NodeID {
		n.draining.Store(on)
		return n.ml.UpdateMeta(n.meta())
	}
	if _, ok := n.ClusterState().Node(id); !ok {
		return status.Errorf(codes.NotFound, "no node %q in this cluster", id)
	}
	c, err := n.router.peer(id)
	if err != nil {
		return err
	}
	_, err = c.Drain(ctx, &pb.DrainRequest{NodeId: id, Undo: !on})
	return err
}

func (n *Node) raftConfig(name string) *raft.Config {
	t := n.cfg.ShardTemplate
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	if t.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout, rc.ElectionTimeout = t.HeartbeatTimeout, t.ElectionTimeout
		rc.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	}
	rc.Logger = logutil.HCLog(name, n.log)
	return rc
}

func (n *Node) openControl() error {
	var err error
	if n.controlTrans, err = n.mux.Transport(raftmux.ControlGroup); err != nil {
		return err
	}
	rc := n.raftConfig("raft.control")
	rc.SnapshotThreshold = 1024
	rc.TrailingLogs = 1024
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(n.cfg.DataDir, "control"), 2, rc.Logger)
	if err != nil {
		return err
	}
	ls := n.raftDB.Shard(raftmux.ControlGroup)
	n.controlFSM = newControlFSM()
	n.control, err = raft.NewRaft(rc, n.controlFSM, ls, ls, snaps, n.controlTrans)
	return err
}

func checkIdentity(cfg Config) error {
	p := filepath.Join(cfg.DataDir, "node.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		b, _ = json.MarshalIndent(identity{NodeID: cfg.NodeID}, "", "  ")
		tmp := p + ".tmp"
		if err := writeFileSync(tmp, b); err != nil {
			return err
		}
		return os.Rename(tmp, p)
	}
	if err != nil {
		return fmt.Errorf("cluster: read %s: %w", p, err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return fmt.Errorf("cluster: %s is corrupt: %w", p, err)
	}
	if id.NodeID != cfg.NodeID {
		return fmt.Errorf("cluster: data dir %s belongs to node %q; started as %q", cfg.DataDir, id.NodeID, cfg.NodeID)
	}
	return nil
}

func writeFileSync(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Close leaves the cluster, stops every replica and closes the stores.
func (n *Node) Close() error {
	var errs []error
	n.closeMu.Do(func() {
		n.StopServing()
		close(n.stop)
		n.wg.Wait()
		if n.metrics != nil {
			errs = append(errs, n.metrics.Unregister())
		}
		if n.ml != nil {
			_ = n.ml.Leave(time.Second)
			errs = append(errs, n.ml.Shutdown())
		}
		if n.replicas != nil {
			errs = append(errs, n.replicas.closeAll()...)
		}
		if n.control != nil {
			errs = append(errs, n.control.Shutdown().Error())
		}
		if n.mux != nil {
			errs = append(errs, n.mux.Close())
		}
		n.peers.close()
		if n.raftDB != nil {
			errs = append(errs, n.raftDB.Close())
		}
		if n.state != nil {
			errs = append(errs, n.state.Close())
		}
	})
	return errors.Join(errs...)
}

// Kill stops the node without leaving the cluster gracefully (tests use it
// to simulate a crash of an in-process node).
func (n *Node) Kill() error {
	if n.ml != nil {
		_ = n.ml.Shutdown()
	}
	return n.Close()
}

// ID is the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// ClusterState returns the control group's current state as this node knows it.
func (n *Node) ClusterState() *ClusterState { return n.controlFSM.State() }

// RaftAddr is the advertised multiplexed Raft address.
func (n *Node) RaftAddr() string { return string(n.mux.Addr()) }

// GossipAddr is the memberlist address peers join.
func (n *Node) GossipAddr() string { return n.ml.Addr() }

// Shards returns the local replicas, sorted by shard id.
func (n *Node) Shards() []*shard.Shard { return n.replicas.all() }

// local is this node's replica of Raft group id, or nil (a group id is a
// shard id when the cluster has one group per shard).
func (n *Node) local(id uint32) *shard.Shard { return n.replicas.get(id) }

// groupOf is the Raft group carrying addr's shard.
func (n *Node) groupOf(addr actor.Address) uint32 { return n.router.groupOf(addr) }

// WaitReady waits until the cluster exists and every shard has a leader this
// node can see (its own replica's, or one reported by the shard's nodes).
func (n *Node) WaitReady(ctx context.Context) error {
	for {
		st := n.ClusterState()
		if st.Initialized() && n.allShardsLed(st) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: node %s not ready (cluster initialized: %v): %w", n.cfg.NodeID, st.Initialized(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (n *Node) allShardsLed(st *ClusterState) bool {
	for id := range st.Groups() {
		if !st.Hosts(id, n.cfg.NodeID) {
			continue
		}
		s := n.local(id)
		if s == nil {
			return false
		}
		if addr, _ := s.Raft().LeaderWithID(); addr == "" {
			return false
		}
	}
	return true
}

// Registry implements gateway.Backend.
func (n *Node) Registry() *actor.Registry { return n.cfg.Registry }

// ShardOf implements gateway.Backend.
func (n *Node) ShardOf(addr actor.Address) uint32 { return n.router.shardOf(addr) }

// Submit implements gateway.Backend (router.Submit).
func (n *Node) Submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	return n.router.Submit(ctx, cmd)
}

// Get implements gateway.Backend (router.Get).
func (n *Node) Get(ctx context.Context, addr actor.Address, stale bool) (engine.Entity, uint64, error) {
	return n.router.Get(ctx, addr, stale)
}

// History implements gateway.Backend (router.History).
func (n *Node) History(ctx context.Context, addr actor.Address, after engine.Position, limit int, includeRejections, stale bool) ([]*pb.HistoryRecord, engine.Position, bool, error) {
	return n.router.History(ctx, addr, after, limit, includeRejections, stale)
}

// HistoryPage implements gateway.HistoryPager (router.HistoryPage).
func (n *Node) HistoryPage(ctx context.Context, addr actor.Address, after engine.Position, limit int, includeRejections, stale bool) ([]*pb.HistoryRecord, engine.Position, bool, engine.Position, error) {
	return n.router.HistoryPage(ctx, addr, after, limit, includeRejections, stale)
}

// Result implements gateway.ResultBackend (router.Result).
func (n *Node) Result(ctx context.Context, addr actor.Address, key string, stale bool) (*pb.Result, bool, uint64, error) {
	return n.router.Result(ctx, addr, key, stale)
}

// LeaderHint implements gateway.RouteHinter (router.LeaderHint).
func (n *Node) LeaderHint(id uint32) (node, grpcAddr string, remote bool) {
	return n.router.LeaderHint(n.ClusterState().GroupOf(id)) // the gateway names the shard
}

// members is gossip's member list (nil before membership starts).
func (n *Node) members() []membership.Member {
	if n.ml == nil {
		return nil
	}
	return n.ml.Members()
}

// newClusterID returns a random cluster id.
func newClusterID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// replicaLoop keeps the local replicas equal to what the cluster map places
// on this node: it opens the missing ones and removes those moved away.
func (n *Node) replicaLoop() {
	defer n.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.controlFSM.changed:
		case <-t.C:
		}
		st := n.ClusterState()
		n.loadDeployed(st)
		n.replicas.reopenWaiting()
		n.replicas.reconcile(st)
	}
}
