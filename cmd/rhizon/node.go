package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"gopkg.in/yaml.v3"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/console"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/telemetry"
	"github.com/rhizon/rhizon/natsserver"
	"github.com/rhizon/rhizon/shard"
)

type nodeFlags struct {
	nodeID        string
	dataDir       string
	shards        uint32
	raftGroups    uint32
	grpcAddr      string
	httpAddr      string
	tokenFile     string
	quotas        string
	natsAddr      string
	natsURL       string
	natsCluster   string
	natsRoutes    []string
	natsCreds     string
	streamRepl    int
	eventsRepl    int
	eventsFsync   string
	eventsFormat  string
	streamSends   bool
	dupWindow     time.Duration
	natsSync      time.Duration
	otlpEndpoint  string
	logLevel      string
	config        string
	devTenant     string
	snapshotAt    uint64
	snapshotEvery time.Duration
	raftAddr      string
	gossipAddr    string
	advertise     string
	join          []string
	expect        int
	zone          string
	secret        string
	rf            int
	controlVote   int
	deadAfter     time.Duration
	fastGossip    bool
	pprof         bool
	raftV1        bool
	tlsCert       string
	tlsKey        string
	tlsCA         string
	heartbeat     time.Duration
	election      time.Duration
	leaseReads    bool
	linger        time.Duration
	tokenPoll     time.Duration
	watchToken    int
	watchConn     int
	batchFlight   int
	httpLimits    gateway.HTTPLimits
	docTypes      docTypesFlag
	retention     retentionFlag
	sweepEvery    time.Duration
	sweepRows     int
	wasmActors    []string
}

func (f *nodeFlags) register(c *cobra.Command, dev bool) {
	fs := c.Flags()
	nodeID, dataDir, shards, token := "", "data", cluster.DefaultShards, ""
	grpcAddr, httpAddr, natsAddr, raftAddr, gossipAddr := ":7400", ":7401", ":4222", ":7402", ":7403"
	if dev {
		nodeID, dataDir, shards = "dev", "./data", 8
		grpcAddr, httpAddr, natsAddr = "127.0.0.1:7400", "127.0.0.1:7401", "127.0.0.1:4222"
		raftAddr, gossipAddr = "127.0.0.1:7402", "127.0.0.1:7403"
	}
	fs.StringVar(&f.nodeID, "node-id", nodeID, "this node's id (stable across restarts)")
	addWasmActorFlag(fs, &f.wasmActors)
	fs.StringVar(&f.dataDir, "data-dir", dataDir, "directory for all of the node's data")
	fs.Uint32Var(&f.shards, "shards", uint32(shards), "shard count, fixed when the data directory is created")
	fs.Uint32Var(&f.raftGroups, "raft-groups", 0, "Raft groups carrying the shards (group = shard mod groups; 0: one per node the cluster is created with, --bootstrap-expect; the shard count: one per shard), fixed when the cluster is created: fewer groups make fuller log entries and cost less CPU per command")
	fs.StringVar(&f.grpcAddr, "grpc-addr", grpcAddr, "gRPC gateway listen address (port 0 picks a free port)")
	fs.StringVar(&f.httpAddr, "http-addr", httpAddr, "HTTP/JSON gateway, /metrics and health listen address")
	fs.StringVar(&f.tokenFile, "token-file", token, "bearer token file (JSON or YAML); dev creates <data-dir>/dev-token.json when not given")
	fs.StringVar(&f.quotas, "quotas", "", "per-tenant and per-principal rate and storage quotas: a JSON or YAML file, or inline JSON (a --config file may hold them as a map under quotas:); none by default")
	fs.StringVar(&f.natsAddr, "nats-addr", natsAddr, `embedded NATS listen address; "off" disables it`)
	fs.StringVar(&f.natsURL, "nats-url", "", "external NATS URL(s), comma-separated; when set no embedded server runs")
	fs.StringVar(&f.natsCreds, "nats-creds", "", "credentials file for --nats-url")
	natsCluster := ":7404"
	if dev {
		natsCluster = ""
	}
	fs.StringVar(&f.natsCluster, "nats-cluster-addr", natsCluster, "embedded NATS route listener: the nodes' servers form one NATS cluster (used with routes)")
	fs.StringSliceVar(&f.natsRoutes, "nats-routes", nil, "embedded NATS route addresses of other nodes (host:port,...); default: the --join hosts at this node's route port")
	fs.IntVar(&f.streamRepl, "stream-replicas", 0, "JetStream stream replicas (0: 3 with a NATS cluster, else 1)")
	fs.IntVar(&f.eventsRepl, "events-replicas", 0,
		"replicas of the RHIZON_EVENTS stream (0: as --stream-replicas); it is a projection of the shards' histories")
	fs.StringVar(&f.eventsFsync, "events-fsync", ingress.EventsSyncAsync,
		"async or always: async gives a one-replica RHIZON_EVENTS JetStream's async persist mode (no fsync per event; a replicated stream syncs as its servers do); always syncs it like every stream")
	fs.BoolVar(&f.streamSends, "stream-sends", false,
		"relays publish every actor-to-actor Send to the ingress stream; by default they submit a Send to its target's shard leader and use the stream only where that would not keep a target entity's Sends in order")
	fs.StringVar(&f.eventsFormat, "events-format", stream.FormatProtobuf,
		"protobuf, json or both: what the relay publishes each event as (protobuf on rhizon.evt.<tenant>.<workspace>.<actor_type>.<entity>, JSON envelopes on evt.<tenant>.<workspace>.<actor_type>.<name>; see README JSON events); give every node the same")
	fs.DurationVar(&f.natsSync, "nats-sync-interval", 0,
		"embedded NATS: sync JetStream's files this often instead of after every write (0, the default); faster ingress, but a power loss of a majority of the servers within it can lose acknowledged messages (README)")
	fs.DurationVar(&f.dupWindow, "nats-duplicate-window", ingress.DefaultDuplicateWindow,
		"how long JetStream remembers message ids (relayed events and commands, SubmitAsync keys); each id held costs memory on every NATS server")
	fs.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "OTLP endpoint for traces and metrics: host:port (plaintext gRPC) or a URL (https:// for TLS); overrides OTEL_EXPORTER_OTLP_*ENDPOINT (see README Operations)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.config, "config", "", "YAML file with flag values (flags and RHIZON_* variables win)")
	fs.Uint64Var(&f.snapshotAt, "snapshot-threshold", 8192, "raft entries between snapshots of a shard")
	fs.DurationVar(&f.snapshotEvery, "snapshot-interval", 2*time.Minute, "how often a shard checks whether snapshot-threshold entries were appended (tests make it short)")
	_ = fs.MarkHidden("snapshot-interval")
	fs.StringVar(&f.raftAddr, "raft-addr", raftAddr, "Raft listener shared by every shard (port 0 picks a free port)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", gossipAddr, "memberlist gossip address (TCP and UDP)")
	fs.StringVar(&f.advertise, "advertise-host", "", "host other nodes use to reach this one (default: the listen host)")
	fs.StringSliceVar(&f.join, "join", nil, "gossip addresses of existing nodes (host:port,...)")
	fs.IntVar(&f.expect, "bootstrap-expect", 0, "create a new cluster once this many nodes are up (default 1 without --join)")
	fs.StringVar(&f.zone, "zone", "", "failure zone; replicas of a shard spread across zones")
	fs.StringVar(&f.secret, "cluster-secret", "", "shared secret for node-to-node calls (dev generates one)")
	fs.IntVar(&f.rf, "replication-factor", cluster.DefaultRF, "replicas per shard (capped by the node count)")
	fs.IntVar(&f.controlVote, "control-voters", 3, "nodes voting in the control group that owns the shard map")
	fs.DurationVar(&f.deadAfter, "dead-after", 30*time.Second, "replace the replicas of a node dead this long")
	fs.DurationVar(&f.heartbeat, "raft-heartbeat-timeout", time.Second, "Raft heartbeat timeout")
	fs.DurationVar(&f.election, "raft-election-timeout", time.Second, "Raft election timeout")
	fs.BoolVar(&f.leaseReads, "lease-reads", true, "serve linearizable reads under the leader lease, without a heartbeat round (assumes clocks drift at most 1.5x; false: a round per read)")
	fs.DurationVar(&f.linger, "propose-linger", shard.DefaultProposeLinger,
		"how long a busy shard's leader waits for more commands before proposing an entry (0: never)")
	fs.BoolVar(&f.fastGossip, "fast-gossip", false, "gossip tuned for loopback tests (fast failure detection)")
	fs.BoolVar(&f.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the HTTP address")
	fs.BoolVar(&f.raftV1, "raft-accept-unauthenticated", false,
		"during a rolling upgrade from a version whose Raft connections were not authenticated: accept them, and speak that version to such nodes; anyone who reaches the Raft port can then speak Raft to this node")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) the gRPC, HTTP, Raft and embedded NATS listeners serve TLS with; needs --tls-key")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA certificates this node verifies the other nodes with: gateways, Raft, NATS routes (default: the system's roots)")
	fs.DurationVar(&f.tokenPoll, "token-poll", gateway.DefaultTokenPoll, "how often the token file is checked for changes and reloaded (0: only on SIGHUP)")
	fs.IntVar(&f.watchToken, "watch-max-per-token", gateway.DefaultWatchesPerToken, "Watch streams one token may hold open on this node")
	fs.IntVar(&f.watchConn, "watch-max-per-conn", gateway.DefaultWatchesPerConn, "Watch streams one client connection may hold open")
	fs.IntVar(&f.batchFlight, "batch-max-inflight", gateway.DefaultBatchInFlight, "SubmitBatch commands in flight at once on this node, over all calls")
	hl := gateway.DefaultHTTPLimits()
	fs.DurationVar(&f.httpLimits.ReadHeaderTimeout, "http-read-header-timeout", hl.ReadHeaderTimeout, "HTTP: time to read a request's header")
	fs.DurationVar(&f.httpLimits.ReadTimeout, "http-read-timeout", hl.ReadTimeout, "HTTP: time to read a whole request, body included")
	fs.DurationVar(&f.httpLimits.WriteTimeout, "http-write-timeout", hl.WriteTimeout, "HTTP: time to write a response (a watch gets it per event instead)")
	fs.DurationVar(&f.httpLimits.IdleTimeout, "http-idle-timeout", hl.IdleTimeout, "HTTP: keep-alive connection idle time before it is closed")
	fs.IntVar(&f.httpLimits.MaxHeaderBytes, "http-max-header-bytes", hl.MaxHeaderBytes, "HTTP: largest request header")
	fs.Var(&f.docTypes, "document-types", `document actor types besides kv, each behaving as kv: "user,invoice", or one type with indexed top-level fields "user:email,age" (repeat the flag, or join with ';'); every node of a cluster must declare the same set`)
	fs.Var(&f.retention, "retention", `retention per tenant: "tenant=acme:idempotency=72h:history=30d" (repeat the flag, or join with ';'); every node of a cluster should say the same (README: Retention)`)
	fs.DurationVar(&f.sweepEvery, "retention-sweep-interval", time.Minute, "how often a shard leader starts a pass deleting expired idempotency and history records")
	fs.IntVar(&f.sweepRows, "retention-sweep-rows", 1024, "idempotency records one sweep entry examines (tests make it small)")
	_ = fs.MarkHidden("retention-sweep-rows")
	_ = fs.MarkHidden("fast-gossip")
	if dev {
		fs.StringVar(&f.devTenant, "tenant", "dev", "tenant of the dev token")
	}
}

func devCmd() *cobra.Command {
	f := &nodeFlags{}
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run a single development node: several shards, embedded NATS, a dev token",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := applyConfig(c.Flags()); err != nil {
				return &exitErr{exitUsage, err}
			}
			return runNode(c.Context(), c.OutOrStdout(), f, true)
		},
	}
	f.register(c, true)
	return c
}

func nodeCmd() *cobra.Command {
	f := &nodeFlags{}
	c := &cobra.Command{
		Use:   "node",
		Short: "Run a node",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := applyConfig(c.Flags()); err != nil {
				return &exitErr{exitUsage, err}
			}
			if f.nodeID == "" {
				return &exitErr{exitUsage, errors.New("--node-id is required (or RHIZON_NODE_ID)")}
			}
			if f.tokenFile == "" {
				return &exitErr{exitUsage, errors.New("--token-file is required (or RHIZON_TOKEN_FILE)")}
			}
			return runNode(c.Context(), c.OutOrStdout(), f, false)
		},
	}
	f.register(c, false)
	return c
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// natsLogger is the embedded NATS server's logger: its notices (a 35-line
// banner at start) only at --log-level debug, its warnings and errors always.
func natsLogger(log *slog.Logger, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil || l <= slog.LevelDebug {
		return log
	}
	return slog.New(minLevel{log.Handler(), max(l, slog.LevelWarn)})
}

// minLevel drops the records below level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}

func runNode(ctx context.Context, out io.Writer, f *nodeFlags, dev bool) (err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := newLogger(f.logLevel)
	if err != nil {
		return &exitErr{exitUsage, err}
	}
	slog.SetDefault(log)
	if f.linger < 0 {
		return &exitErr{exitUsage, fmt.Errorf("--propose-linger %v: use a duration of 0 or more (0: never wait)", f.linger)}
	}
	if f.eventsFsync != ingress.EventsSyncAsync && f.eventsFsync != ingress.EventsSyncAlways {
		return &exitErr{exitUsage, fmt.Errorf("--events-fsync %q: use %s or %s", f.eventsFsync, ingress.EventsSyncAsync, ingress.EventsSyncAlways)}
	}
	switch f.eventsFormat {
	case stream.FormatProtobuf, stream.FormatJSON, stream.FormatBoth:
	default:
		return &exitErr{exitUsage, fmt.Errorf("--events-format %q: use %s, %s or %s", f.eventsFormat, stream.FormatProtobuf, stream.FormatJSON, stream.FormatBoth)}
	}
	srvTLS, err := serverTLS(f.tlsCert, f.tlsKey, f.tlsCA)
	if err != nil {
		return &exitErr{exitUsage, err}
	}
	// nodeTLS is the certificate and the peers' CA, for Raft, the calls to
	// the peers' gateways and NATS: every node of a cluster serves TLS or
	// none does, so peers are called the way this node is served.
	var nodeTLS *tls.Config
	if srvTLS != nil {
		peers, err := clientTLS(f.tlsCA)
		if err != nil {
			return &exitErr{exitUsage, err}
		}
		nodeTLS = srvTLS.Clone()
		nodeTLS.RootCAs = peers.RootCAs
	}
	if soft := tuneGC(cgroupMemoryMax); soft > 0 {
		log.Info("soft memory limit from the container's", "bytes", soft)
	}
	if err := os.MkdirAll(f.dataDir, 0o755); err != nil {
		return err
	}

	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "rhizon", NodeID: f.nodeID, OTLPEndpoint: f.otlpEndpoint})
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	log.Info("telemetry", "export", tel.Summary)

	var devToken string
	if dev && f.tokenFile == "" {
		f.tokenFile = filepath.Join(f.dataDir, "dev-token.json")
	}
	if dev {
		if _, statErr := os.Stat(f.tokenFile); errors.Is(statErr, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(f.tokenFile), 0o755); err != nil {
				return err
			}
			if devToken, err = gateway.GenerateDevTokenFile(f.tokenFile, f.devTenant); err != nil {
				return err
			}
		} else if devToken, err = firstToken(f.tokenFile); err != nil {
			return err
		}
	}
	auth, err := gateway.LoadTokenFile(f.tokenFile)
	if err != nil {
		return &exitErr{exitUsage, err}
	}
	// Tokens are reloaded without a restart: on SIGHUP and when the file
	// changes. A file that does not load keeps the tokens in use.
	if f.tokenPoll > 0 {
		go auth.WatchFile(ctx, f.tokenPoll, log)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := auth.Reload(); err != nil {
					log.Error("SIGHUP: token file does not load; keeping the previous tokens", "path", f.tokenFile, "err", err)
					continue
				}
				log.Info("SIGHUP: token file reloaded", "path", f.tokenFile)
			}
		}
	}()
	var quotas *gateway.Quotas
	if f.quotas != "" {
		if quotas, err = gateway.LoadQuotas(f.quotas); err != nil {
			return &exitErr{exitUsage, err}
		}
	}

	secret := f.secret
	if secret == "" && dev {
		secret = randomHex(16)
	}
	if secret == "" {
		return &exitErr{exitUsage, errors.New("--cluster-secret is required (or RHIZON_CLUSTER_SECRET): nodes authenticate each other with it")}
	}

	var nats *natsserver.Server
	var producerTokens []string
	natsURL := f.natsURL
	routes := natsRoutes(f)
	if natsURL == "" && f.natsAddr != "off" {
		if producerTokens, err = tokenFileTokens(f.tokenFile); err != nil {
			return &exitErr{exitUsage, err}
		}
		// The embedded server would wait 10 s for a port it cannot bind
		// and then not say why: check first.
		if portInUse(f.natsAddr) {
			return &exitErr{exitError, fmt.Errorf("--nats-addr %s: the port is in use (another `rhizon dev` or NATS server?): "+
				"stop it, or give this node other ports (--nats-addr, --grpc-addr, --http-addr, --raft-addr, --gossip-addr, and its own --data-dir)", f.natsAddr)}
		}
		ec := natsserver.EmbeddedConfig{
			ServerName: "rhizon-" + f.nodeID, Addr: f.natsAddr, StoreDir: filepath.Join(f.dataDir, "nats"),
			ClusterSecret: secret, TLS: nodeTLS, Logger: natsLogger(log, f.logLevel), ProducerTokens: producerTokens,
			SyncInterval: f.natsSync,
		}
		if len(routes) > 0 {
			ec.ClusterAddr, ec.Routes = f.natsCluster, routes
		}
		nats, err = natsserver.StartEmbedded(ec)
		if err != nil {
			return err
		}
		defer nats.Shutdown()
		natsURL = nats.ClientURL()
	}

	// Listen first: the node advertises the actual addresses (port 0 works).
	gl, err := net.Listen("tcp", f.grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr %s: %w", f.grpcAddr, err)
	}
	hl, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("--http-addr %s: %w", f.httpAddr, err)
	}
	reg, err := registry(&f.docTypes, f.wasmActors)
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}
	node, err := cluster.Open(cluster.Config{
		NodeID: f.nodeID, DataDir: f.dataDir, Shards: f.shards, RaftGroups: raftGroups(f), RF: f.rf, Registry: reg,
		Logger: log, Version: version, Zone: f.zone,
		RaftAddr: f.raftAddr, RaftAdvertise: withHost(f.advertise, f.raftAddr),
		GossipAddr: f.gossipAddr, GossipAdvertise: withHost(resolveIP(f.advertise), f.gossipAddr),
		GRPCAddr: advertised(f.advertise, gl.Addr().String()), HTTPAddr: advertised(f.advertise, hl.Addr().String()),
		NATSAddr: natsURL, Join: f.join, BootstrapExpect: f.expect, ClusterSecret: secret, TLS: nodeTLS, RaftAcceptUnauthenticated: f.raftV1, DeadAfter: f.deadAfter,
		ControlVoters: f.controlVote,
		FastGossip:    f.fastGossip,
		ShardTemplate: shard.Config{
			SnapshotThreshold: f.snapshotAt, SnapshotInterval: f.snapshotEvery, HeartbeatTimeout: f.heartbeat, ElectionTimeout: f.election,
			LeaderLeaseTimeout: min(f.heartbeat, f.election) / 2,
			Retention:          f.retention.windows, HistoryRetention: f.retention.history,
			SweepInterval: f.sweepEvery, SweepRows: f.sweepRows, NoLeaseReads: !f.leaseReads,
			ProposeLinger: lingerOf(f.linger),
		},
	})
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}
	defer func() {
		if cerr := node.Close(); cerr != nil {
			log.Error("close node", "err", cerr)
		}
	}()

	var async *ingress.Manager
	if natsURL != "" {
		var nc *natsgo.Conn
		if async, nc, err = startIngress(f, node, nats, auth, secret, producerTokens, len(routes), log); err != nil {
			return err
		}
		defer func() { async.Close(); nc.Close() }()
		node.SetRepublisher(republisher{async})
		node.SetReplicaProbe(async.ProbeShard)
	}

	gcfg := gateway.Config{Backend: node, Auth: auth, Logger: log, NodeID: f.nodeID, Version: version,
		MaxWatchesPerToken: f.watchToken, MaxWatchesPerConn: f.watchConn, MaxBatchInFlight: f.batchFlight, Quotas: quotas}
	if async != nil {
		gcfg.Async = async
	}
	gw, err := gateway.New(gcfg)
	if err != nil {
		return err
	}
	sopts := gateway.ServerOptions()
	if srvTLS != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(srvTLS)))
	}
	gs := grpc.NewServer(sopts...)
	gw.RegisterGRPC(gs)
	node.RegisterGRPC(gs)
	mux := http.NewServeMux()
	mux.Handle("/metrics", tel.MetricsHandler())
	if f.pprof {
		runtime.SetBlockProfileRate(int(time.Millisecond))
		runtime.SetMutexProfileFraction(100)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// The web console (package console): static files; its API calls
	// carry the user's token like any other client's.
	mux.Handle(console.Prefix, console.Handler())
	mux.Handle(strings.TrimSuffix(console.Prefix, "/"), console.Handler())
	mux.Handle("/", gw.HTTPHandler())
	hs := gateway.NewHTTPServer(mux, f.httpLimits)
	hs.TLSConfig = srvTLS
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(gl) }()
	go func() {
		if srvTLS != nil {
			errc <- hs.ServeTLS(hl, "", "")
			return
		}
		errc <- hs.Serve(hl)
	}()
	hctx, hcancel := context.WithCancel(ctx)
	go gw.WatchHealth(hctx, 2*time.Second)
	defer func() {
		hcancel()
		gw.Shutdown() // NOT_SERVING first, so balancers stop before the drain
		// Peers keep their ForwardStreams to this node open: end them, or
		// the graceful stop below waits its 5 s for them.
		node.StopServing()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()

	// A node that joins an existing cluster may wait for the others; ready
	// means the cluster exists and this node's replicas have leaders.
	rctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	err = node.WaitReady(rctx)
	cancel()
	if err != nil {
		return err
	}
	natsLine := natsURL
	if nats != nil {
		if srvTLS != nil {
			natsLine = "tls://" + strings.TrimPrefix(strings.TrimPrefix(natsURL, "nats://"), "tls://")
		}
		if dev {
			// dev's secret is new on every start: print the URL an
			// event reader needs, as the token is printed.
			natsLine, _ = natsNodeURLs(secret, natsLine, srvTLS != nil)
			natsLine += " (JetStream, node credentials)"
			if devToken != "" {
				// A producer connects with its bearer token as the NATS
				// token; it lands in an account of its own.
				u := natsURL
				if srvTLS != nil {
					u = "tls://" + strings.TrimPrefix(natsURL, "nats://")
				}
				natsLine += "\n  producer:  " + strings.Replace(u, "://", "://"+devToken+"@", 1) +
					" (the token; publish commands to rhizon.in.<shard>)"
			}
		} else {
			natsLine += " (JetStream; producers connect with their bearer token as the NATS token, operators with rhizon nats-url)"
		}
	} else if natsURL != "" {
		natsLine += " (JetStream)"
	}
	printBanner(out, f, dev, gl.Addr().String(), hl.Addr().String(), natsLine, devToken, srvTLS != nil)
	log.Info("node ready", "node", f.nodeID, "grpc", gl.Addr().String(), "http", hl.Addr().String(), "shards", f.shards)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case err := <-errc:
		return err
	}
}

func printBanner(out io.Writer, f *nodeFlags, dev bool, grpcAddr, httpAddr, natsLine, token string, withTLS bool) {
	mode := "node"
	if dev {
		mode = "dev"
	}
	fmt.Fprintf(out, "rhizon %s %s is ready\n", mode, version)
	fmt.Fprintf(out, "  node:      %s (%d shards)\n", f.nodeID, f.shards)
	fmt.Fprintf(out, "  data:      %s\n", f.dataDir)
	scheme, tlsNote := "http", ""
	if withTLS {
		scheme, tlsNote = "https", " (TLS)"
	}
	fmt.Fprintf(out, "  gRPC:      %s%s\n", grpcAddr, tlsNote)
	fmt.Fprintf(out, "  HTTP/JSON: %s://%s  (metrics at /metrics)\n", scheme, httpAddr)
	fmt.Fprintf(out, "  health:    %s://%s/readyz  (READY, DEGRADED or FAILED, with reasons; liveness at /healthz)\n", scheme, httpAddr)
	fmt.Fprintf(out, "  console:   %s://%s%s  (log in with a token)\n", scheme, httpAddr, console.Prefix)
	if natsLine != "" {
		fmt.Fprintf(out, "  NATS:      %s\n", natsLine)
	}
	fmt.Fprintf(out, "  tokens:    %s\n", f.tokenFile)
	if token != "" {
		fmt.Fprintf(out, "  token:     %s\n", token)
		fmt.Fprintf(out, "\ntry:\n  export RHIZON_ADDR=%s RHIZON_TOKEN=%s\n", grpcAddr, token)
		bin := selfPath()
		fmt.Fprintf(out, "  %s send counter/c1 cmd.counter.add '{\"amount\":5}'\n  %s get counter/c1\n", bin, bin)
	}
}

// withHost is listen with its host replaced by host, or "" (use the bound
// address) when no host is given.
func withHost(host, listen string) string {
	if host == "" {
		return ""
	}
	_, p, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	return net.JoinHostPort(host, p)
}

// resolveIP returns host as an IP address: memberlist needs an IP to
// advertise, while operators (Compose, Kubernetes) give service names.
func resolveIP(host string) string {
	if host == "" || net.ParseIP(host) != nil {
		return host
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return host // memberlist will say what is wrong
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String()
		}
	}
	if len(ips) > 0 {
		return ips[0].String()
	}
	return host
}

// advertised is the address peers and clients should use for a bound
// address: --advertise-host when given; the machine's host name when bound to
// every interface (0.0.0.0, ::), which in containers resolves to the
// container's address; the bound address otherwise.
func advertised(host, bound string) string {
	h, p, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if host != "" {
		return net.JoinHostPort(host, p)
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		if name, err := os.Hostname(); err == nil {
			return net.JoinHostPort(name, p)
		}
	}
	return bound
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// firstToken reads the first token of a token file (dev prints it).
// tokenFileTokens are the tokens of a token file (already validated by
// gateway.LoadTokenFile): each may publish commands to the embedded NATS
// server from an account of its own. YAML reads the JSON files too.
func tokenFileTokens(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var tf struct {
		Tokens []struct {
			Token string `yaml:"token"`
		} `yaml:"tokens"`
	}
	if err := yaml.Unmarshal(b, &tf); err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	out := make([]string, 0, len(tf.Tokens))
	for _, t := range tf.Tokens {
		out = append(out, t.Token)
	}
	return out, nil
}

func firstToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var tf struct {
		Tokens []struct {
			Token string `json:"token"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal(b, &tf); err != nil || len(tf.Tokens) == 0 {
		return "", fmt.Errorf("token file %s has no tokens (delete it and dev creates a new one)", path)
	}
	return strings.TrimSpace(tf.Tokens[0].Token), nil
}

// natsRoutes are the embedded server's routes: --nats-routes, or else the
// --join hosts at this node's route port (nodes of one deployment use the
// same ports). A route to the node itself is harmless: NATS drops it.
func natsRoutes(f *nodeFlags) []string {
	if f.natsCluster == "" || f.natsCluster == "off" {
		return nil
	}
	if len(f.natsRoutes) > 0 {
		return f.natsRoutes
	}
	_, port, err := net.SplitHostPort(f.natsCluster)
	if err != nil || port == "0" {
		return nil
	}
	var out []string
	for _, j := range f.join {
		if host, _, err := net.SplitHostPort(j); err == nil {
			out = append(out, net.JoinHostPort(host, port))
		}
	}
	return out
}

// startIngress connects to NATS (in-process to the embedded server) and
// starts the ingress consumers and outbox relays of the shards this node
// leads.
func startIngress(f *nodeFlags, node *cluster.Node, embedded *natsserver.Server, auth *gateway.Auth, secret string, producerTokens []string, routes int, log *slog.Logger) (*ingress.Manager, *natsgo.Conn, error) {
	opts := []natsgo.Option{natsgo.Name("rhizon-" + f.nodeID), natsgo.MaxReconnects(-1)}
	url := f.natsURL
	if embedded != nil {
		// The node account is the nodes' and operators'; producers are in
		// accounts of their own (ingress/accounts.go). The node's replies
		// (pulled commands with their tokens) use an inbox prefix of its
		// own all the same.
		opts = append(opts, natsgo.InProcessServer(embedded),
			natsgo.UserInfo(natsserver.NodeCredentials(secret)), natsgo.CustomInboxPrefix(stream.NodeInboxPrefix))
		url = ""
	} else if f.natsCreds != "" {
		opts = append(opts, natsgo.UserCredentials(f.natsCreds))
	}
	nc, err := natsgo.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("nats: %w", err)
	}
	// A NATS cluster of Rhizon nodes has at least 3 of them (Rhizon's own
	// replication factor); a single server can only hold one replica.
	replicas := f.streamRepl
	if replicas == 0 {
		replicas = 1
		if embedded != nil && routes > 0 {
			replicas = 3
		}
	}
	submit := node.Submit
	if f.streamSends {
		submit = nil
	}
	m, err := ingress.Start(ingress.Config{
		Conn: nc, Replicas: replicas, EventsReplicas: f.eventsRepl, EventsSync: f.eventsFsync, EventsFormat: f.eventsFormat, DuplicateWindow: f.dupWindow, ShardOf: node.ShardOf, Registry: node.Registry(),
		SigningKey: ingress.SigningKey(secret), Logger: log,
		Shards: ingress.ShardsOf(node.Shards), ShardCount: func() uint32 { return node.ClusterState().Shards },
		ProducerTokens: producerTokens, Submit: submit,
		Authenticate: func(token string) (actor.Security, error) {
			id, err := auth.Authenticate(token)
			if err != nil {
				return actor.Security{}, err
			}
			return id.Security(), nil
		},
	})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return m, nc, nil
}

// lingerOf maps --propose-linger to shard.Config.ProposeLinger, whose zero
// means the default.
func lingerOf(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// raftGroups is the group count a cluster this node creates gets: the flag,
// else one group per node it is created with, so that each of them leads
// one. Measured on 3 nodes (README Benchmarks): 3 groups ran 57-72% more
// commands per second than one group per shard, with 3x fuller entries, and
// 64 one-shard groups idled at 0.6 cores. A node that only joins creates
// nothing, and a cluster that exists keeps the count it recorded.
func raftGroups(f *nodeFlags) uint32 {
	if f.raftGroups != 0 {
		return f.raftGroups
	}
	founders := max(f.expect, 1) // a node without --join and --bootstrap-expect founds alone
	return uint32(min(founders, int(f.shards)))
}
