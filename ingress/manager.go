package ingress

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/storage"
)

// Shard is what the ingress needs of one local shard replica (*shard.Shard).
type Shard interface {
	ID() uint32
	IsLeader() bool
	Submit(ctx context.Context, cmd actor.Command) (actor.Result, error)
	Outbox(after engine.Position, limit int) ([]storage.OutboxRow, error)
	AckRelayed(ctx context.Context, upTo engine.Position) error
	// Outboxed is signalled after entries were applied: new rows may wait.
	Outboxed() <-chan struct{}
}

// Config configures a node's ingress consumers and outbox relays.
type Config struct {
	// Conn is the node's NATS connection (in-process to the embedded server,
	// or to an external cluster).
	Conn *nats.Conn
	// Replicas of the streams: 1 on a single node, 3 in a cluster.
	Replicas int
	// EventsReplicas of RHIZON_EVENTS (0: Replicas). The events stream is
	// a projection of the shards' histories, so fewer replicas cost only
	// availability of the stream, never an acknowledged command.
	EventsReplicas int
	// EventsFormat is what the relay publishes each event as:
	// stream.FormatProtobuf (the default, ""), stream.FormatJSON or
	// stream.FormatBoth. Every node of a cluster should give the same one:
	// a shard's relay runs on its leader, which may be any node.
	EventsFormat string
	// EventsSync is how RHIZON_EVENTS persists events: EventsSyncAsync
	// (the default, "") or EventsSyncAlways. See EventsSyncAsync.
	EventsSync string
	// ShardOf maps an address to its shard; Shards lists this node's
	// replicas (the manager runs a consumer and a relay for those it leads).
	ShardOf func(actor.Address) uint32
	Shards  func() []Shard
	// ShardCount is the cluster's shard count, 0 while it is not known yet
	// (the streams are created once it is): the ingress stream takes only
	// the subjects of shards that exist, so nothing is stored where no
	// shard would ever consume it.
	ShardCount func() uint32
	// Submit, when set, proposes a command on its shard's leader, wherever
	// that is (the node's router): the relays then deliver actors' Sends
	// to their targets directly, and through the ingress stream only when
	// that would not keep a target entity's Sends in order (relay/direct.go).
	Submit func(ctx context.Context, cmd actor.Command) (actor.Result, error)
	// Registry is the node's actor registry: a command for an actor type
	// this node does not have is retried (another leader may have it, or
	// this node after an upgrade) and dead-lettered after MaxDeliver tries.
	Registry *actor.Registry
	// Authenticate checks an external producer's bearer token and returns
	// the security context of its commands. Nil: only signed messages.
	Authenticate func(token string) (actor.Security, error)
	// ProducerTokens are the tokens that have producer accounts on the
	// embedded server (natsserver.EmbeddedConfig.ProducerTokens): the manager creates
	// each one's stream and consumes it; its commands carry that token's
	// security context.
	ProducerTokens []string
	// ProducerMaxBytes and ProducerMaxMsgs bound each producer's stream
	// (default DefaultProducerMaxBytes, DefaultProducerMaxMsgs): one
	// producer filling its own cannot stop another's or the gateways'.
	ProducerMaxBytes int64
	ProducerMaxMsgs  int64
	// SigningKey authenticates messages that gateways and relays publish;
	// every node of a cluster derives it from the cluster secret.
	SigningKey []byte

	// MaxDeliver is how often the shard leader tries a message that keeps
	// failing on its own before it goes to the dead-letter subject.
	MaxDeliver int
	// Backoff is the delay before the worker tries a message again after
	// its n-th failed try (the last one repeats).
	Backoff []time.Duration
	// PurgeInterval is how often a shard leader purges the messages it
	// finished from its ingress subjects (default 10 ms; see consumer.go).
	PurgeInterval time.Duration
	// RelayAckInterval is how often the relay records its progress in the
	// Raft log.
	RelayAckInterval time.Duration
	// EventsMaxAge bounds how long published events are kept.
	EventsMaxAge time.Duration
	// DuplicateWindow is how long JetStream remembers message ids
	// (default DefaultDuplicateWindow).
	DuplicateWindow time.Duration
	// IngressMaxBytes and IngressMaxMsgs bound the ingress stream (default
	// DefaultIngressMaxBytes, DefaultIngressMaxMsgs); when it is full, a
	// publish is refused rather than an unconsumed command dropped.
	IngressMaxBytes int64
	IngressMaxMsgs  int64
	// DeadMaxBytes and DeadMaxMsgs bound the dead-letter stream (default
	// DefaultDeadMaxBytes, DefaultDeadMaxMsgs); when it is full, the oldest
	// dead letters go.
	DeadMaxBytes int64
	DeadMaxMsgs  int64
	Logger       *slog.Logger
}

// The values of Config.EventsSync.
const (
	// EventsSyncAsync asks no fsync per event where nats-server lets a
	// stream choose: a one-replica RHIZON_EVENTS gets JetStream's async
	// persist mode (events are acknowledged before they are written out;
	// the server flushes them in the background and syncs them on its
	// sync interval). A replicated stream cannot choose: its Raft log
	// syncs as the server-wide setting says (the embedded servers sync
	// every write, for the ingress streams' sake). Events lost with a crashed
	// server are rebuilt from the shards' histories (RepublishRange).
	EventsSyncAsync = "async"
	// EventsSyncAlways persists RHIZON_EVENTS as every other stream.
	EventsSyncAlways = "always"
)

// Stream limits by default. A command is at most stream.MaxCommandBytes.
const (
	DefaultIngressMaxBytes = 1 << 30
	DefaultIngressMaxMsgs  = 1_000_000
	DefaultDeadMaxBytes    = 256 << 20
	DefaultDeadMaxMsgs     = 100_000

	DefaultProducerMaxBytes = 256 << 20
	DefaultProducerMaxMsgs  = 100_000
)

func (c *Config) setDefaults() {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.EventsReplicas <= 0 {
		c.EventsReplicas = c.Replicas
	}
	if c.EventsFormat == "" {
		c.EventsFormat = stream.FormatProtobuf
	}
	if c.EventsSync == "" {
		c.EventsSync = EventsSyncAsync
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if len(c.Backoff) == 0 {
		c.Backoff = []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second, 5 * time.Second}
	}
	if c.PurgeInterval <= 0 {
		c.PurgeInterval = 10 * time.Millisecond
	}
	if c.RelayAckInterval <= 0 {
		c.RelayAckInterval = 100 * time.Millisecond
	}
	if c.EventsMaxAge <= 0 {
		c.EventsMaxAge = 7 * 24 * time.Hour
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	setDefault(&c.IngressMaxBytes, DefaultIngressMaxBytes)
	setDefault(&c.IngressMaxMsgs, DefaultIngressMaxMsgs)
	setDefault(&c.DeadMaxBytes, DefaultDeadMaxBytes)
	setDefault(&c.DeadMaxMsgs, DefaultDeadMaxMsgs)
	setDefault(&c.ProducerMaxBytes, DefaultProducerMaxBytes)
	setDefault(&c.ProducerMaxMsgs, DefaultProducerMaxMsgs)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func setDefault(v *int64, d int64) {
	if *v <= 0 {
		*v = d
	}
}

// DefaultDuplicateWindow is NATS's own default. The relay republishes only
// what was published after its last recorded progress (100 ms apart) when a
// new leader takes over, which takes seconds; a window of minutes covers that
// and producers' retries, while every id in it costs memory on each server
// (about 23 MB a minute at 4,500 events/s).
const DefaultDuplicateWindow = 2 * time.Minute

// Manager runs, on each node, an ingress consumer and an outbox relay for
// every shard the node leads, and serves SubmitAsync and Watch.
type Manager struct {
	cfg     Config
	js      jetstream.JetStream
	log     *slog.Logger
	metrics *metrics

	ready  chan struct{} // closed once the streams exist
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// atomicEvents: the events stream takes atomic batch publishes.
	atomicEvents atomic.Bool
	// atomicIngress: the ingress stream takes atomic batch publishes.
	atomicIngress atomic.Bool
	// ingress is the ingress stream's handle once ensured (drained asks it).
	ingress atomic.Pointer[jetstream.Stream]
	// downSince: when health first saw the NATS connection down (Unix ns;
	// 0 while connected). See connDown.
	downSince atomic.Int64

	// producers maps a producer account to its token.
	producers map[string]string
	// drainedEvery overrides relay.Config.DrainedEvery (tests).
	drainedEvery time.Duration

	mu      sync.Mutex
	workers map[uint32]*worker
}

// Start creates the streams (retrying in the background while JetStream
// elects its leaders) and starts following leadership.
func Start(cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if cfg.EventsSync != EventsSyncAsync && cfg.EventsSync != EventsSyncAlways {
		return nil, fmt.Errorf("ingress: events sync %q is not one of %s, %s", cfg.EventsSync, EventsSyncAsync, EventsSyncAlways)
	}
	if cfg.Conn == nil || cfg.ShardOf == nil || cfg.Shards == nil || cfg.ShardCount == nil || cfg.Registry == nil {
		return nil, errors.New("ingress: Conn, ShardOf, Shards, ShardCount and Registry are required")
	}
	// Relays of every led shard publish through this one handle.
	js, err := jetstream.New(cfg.Conn, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return nil, fmt.Errorf("ingress: jetstream: %w", err)
	}
	m := &Manager{cfg: cfg, js: js, log: cfg.Logger.With("component", "ingress"), ready: make(chan struct{}), workers: map[uint32]*worker{},
		producers: map[string]string{}}
	for _, t := range cfg.ProducerTokens {
		if t != "" {
			m.producers[stream.ProducerAccount(t)] = t
		}
	}
	if m.metrics, err = newMetrics(m); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(1)
	go m.run(ctx)
	return m, nil
}

// Close stops every consumer and relay. Messages in flight stay in the
// stream for the next leader; rows published and not yet recorded are
// published again by the next leader (duplicates are suppressed by id).
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
	m.metrics.unregister()
}

// Ready is closed once the streams exist.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

func (m *Manager) run(ctx context.Context) {
	defer m.wg.Done()
	defer m.stopAll()
	for attempt := 0; ; attempt++ {
		err := m.ensureStreams(ctx)
		if err == nil {
			break
		}
		if attempt%10 == 0 {
			m.log.Warn("JetStream streams not ready; retrying", "err", err)
		} else {
			m.log.Debug("JetStream streams not ready; retrying", "err", err, "attempt", attempt)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	close(m.ready)
	legacy := []string{legacyIngressStream}
	for a := range m.producers {
		legacy = append(legacy, legacyProducerStream(a))
	}
	m.wg.Go(func() { m.moveLegacy(ctx, legacy) })
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		m.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) ensureStreams(ctx context.Context) error {
	shards := m.cfg.ShardCount()
	if shards == 0 {
		return errors.New("the shard count is not known yet (no cluster)")
	}
	subjects := make([]string, shards)
	for i := range subjects {
		subjects[i] = stream.IngressSubject(uint32(i))
	}
	streams := []jetstream.StreamConfig{{
		Name:        stream.IngressStream,
		Description: "Rhizon commands, one subject per shard; consumed by the shard leader",
		Subjects:    subjects,
		Retention:   jetstream.LimitsPolicy, // purged by the shard leaders: consumer.go
		Storage:     jetstream.FileStorage,
		Replicas:    m.cfg.Replicas,
		Duplicates:  m.cfg.DuplicateWindow,
		MaxBytes:    m.cfg.IngressMaxBytes,
		MaxMsgs:     m.cfg.IngressMaxMsgs,
		MaxMsgSize:  stream.MaxCommandBytes,
		Discard:     jetstream.DiscardNew,
		// The relay publishes actors' Sends in atomic batches when the
		// server supports them: one round trip and one replicated
		// proposal per page instead of one wave per repeated target.
		AllowAtomicPublish: true,
	}, m.eventsStreamConfig(), {
		Name:        stream.DeadStream,
		Description: "Rhizon ingress messages that were malformed or kept failing, with the reason",
		Subjects:    []string{stream.DeadPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    m.cfg.Replicas,
		MaxAge:      30 * 24 * time.Hour,
		MaxBytes:    m.cfg.DeadMaxBytes,
		MaxMsgs:     m.cfg.DeadMaxMsgs,
		// A dead letter keeps a bounded prefix of the body; the rest is
		// headers (the reason and the producer's own headers).
		MaxMsgSize: stream.DeadLetterMaxBody + 64<<10,
		Discard:    jetstream.DiscardOld,
	}}
	for _, acct := range m.producerAccounts() {
		subj := make([]string, shards)
		for i := range subj {
			subj[i] = stream.ProducerSubject(acct, uint32(i))
		}
		streams = append(streams, jetstream.StreamConfig{
			Name:        stream.ProducerStream(acct),
			Description: "Rhizon commands of one producer account, one subject per shard; consumed by the shard leaders",
			Subjects:    subj,
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    m.cfg.Replicas,
			// Message ids the producer sets dedupe its own messages only.
			Duplicates: m.cfg.DuplicateWindow,
			MaxBytes:   m.cfg.ProducerMaxBytes,
			MaxMsgs:    m.cfg.ProducerMaxMsgs,
			MaxMsgSize: stream.MaxCommandBytes,
			Discard:    jetstream.DiscardNew,
		})
	}
	// Every stream on its own, all at once, each with its own deadline:
	// nodes starting together create the same streams at the same moment,
	// and nats-server answers only one of several identical concurrent
	// creates; the others hear nothing until their deadline, after which
	// the retry finds the stream and updates it. One deadline for all the
	// streams in a row cost every node that deadline once per stream.
	errs := make([]error, len(streams))
	var wg sync.WaitGroup
	for i, sc := range streams {
		wg.Go(func() { errs[i] = m.ensureStream(ctx, sc) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// streamCallTimeout bounds one stream create or update: long enough for a
// busy meta leader, short enough that a request it never answers is retried
// soon (see ensureStreams).
const streamCallTimeout = 3 * time.Second

func (m *Manager) ensureStream(ctx context.Context, sc jetstream.StreamConfig) error {
	ctx, cancel := context.WithTimeout(ctx, streamCallTimeout)
	defer cancel()
	if sc.Name == stream.EventsStream {
		sc = m.keepPersistMode(ctx, sc)
	}
	if sc.Name == stream.IngressStream || strings.HasPrefix(sc.Name, stream.ProducerStream("")) {
		var err error
		if sc.FirstSeq, err = m.ingressFirstSeq(ctx, sc.Name); err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	s, err := m.js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return fmt.Errorf("stream %s: %w", sc.Name, err)
	}
	switch sc.Name {
	case stream.EventsStream:
		m.atomicEvents.Store(atomicBatches(s.CachedInfo().Config))
	case stream.IngressStream:
		m.atomicIngress.Store(atomicBatches(s.CachedInfo().Config))
		m.ingress.Store(&s)
	}
	return nil
}

// ingressFirstSeq is the first sequence of an ingress stream: the one it
// has when it exists (fixed at creation); after the last of its work-queue
// predecessor, which gives its subjects up first, when that exists (see
// migrate.go); else 0 (the server's 1).
func (m *Manager) ingressFirstSeq(ctx context.Context, name string) (uint64, error) {
	s, err := m.js.Stream(ctx, name)
	if err == nil {
		return s.CachedInfo().Config.FirstSeq, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, err
	}
	last, err := m.retire(ctx, legacyOf(name))
	if err != nil || last == 0 {
		return 0, err
	}
	return last + 1, nil
}

// eventsStreamConfig is RHIZON_EVENTS as this node's settings want it.
func (m *Manager) eventsStreamConfig() jetstream.StreamConfig {
	sc := jetstream.StreamConfig{
		Name:        stream.EventsStream,
		Description: "Rhizon committed events, one subject per entity",
		// The JSON subjects are in the stream whatever this node's format:
		// nodes of one cluster that disagree, or a format changed on a
		// rolling restart, must not flip the stream's subjects back and
		// forth, and a subject nobody publishes to costs nothing.
		Subjects:   []string{stream.EventsPrefix + ">", stream.JSONEventsPrefix + ">"},
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   m.cfg.EventsReplicas,
		Duplicates: m.cfg.DuplicateWindow,
		MaxAge:     m.cfg.EventsMaxAge,
		// The relay publishes events in atomic batches when the server
		// supports them (nats-server 2.12 and later).
		AllowAtomicPublish: true,
	}
	if m.cfg.EventsSync == EventsSyncAsync && sc.Replicas == 1 {
		// The only per-stream fsync choice nats-server offers, and only
		// for one replica without atomic batches (which the relay does
		// not use on one file-stored replica anyway: atomicBatches).
		sc.PersistMode = jetstream.AsyncPersistMode
		sc.AllowAtomicPublish = false
	}
	return sc
}

// keepPersistMode returns sc with the persist mode of the existing stream,
// if it differs: nats-server refuses to change it on an update, and a node
// that failed to update its streams would never be ready.
func (m *Manager) keepPersistMode(ctx context.Context, sc jetstream.StreamConfig) jetstream.StreamConfig {
	s, err := m.js.Stream(ctx, sc.Name)
	if err != nil {
		return sc // missing (created as sc) or unreachable (the update reports it)
	}
	have := s.CachedInfo().Config.PersistMode
	if have == sc.PersistMode {
		return sc
	}
	m.log.Warn("RHIZON_EVENTS keeps its persist mode: nats-server cannot change it on an existing stream; "+
		"to apply --events-fsync, delete the stream and rebuild it with `rhizon events republish`",
		"have", have.String(), "want", sc.PersistMode.String())
	sc.PersistMode = have
	sc.AllowAtomicPublish = have != jetstream.AsyncPersistMode
	return sc
}

// ensureEventsStream creates RHIZON_EVENTS when it is missing (deleted, or
// lost with its servers), so a republish can rebuild it at once.
func (m *Manager) ensureEventsStream(ctx context.Context) error {
	_, err := m.js.Stream(ctx, stream.EventsStream)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", stream.EventsStream, err)
	}
	s, err := m.js.CreateStream(ctx, m.eventsStreamConfig())
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w", stream.EventsStream, err)
	}
	if err == nil {
		m.atomicEvents.Store(atomicBatches(s.CachedInfo().Config))
		m.log.Info("created the missing events stream", "stream", stream.EventsStream)
	}
	return nil
}

func (m *Manager) producerAccounts() []string {
	out := make([]string, 0, len(m.producers))
	for a := range m.producers {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// atomicBatches reports whether the relay publishes events to a stream of
// this configuration in atomic batches. A server older than 2.12 ignores
// AllowAtomicPublish and would store a batch's messages one by one without
// its atomicity. On one replica with file storage, nats-server (2.12-2.15)
// stages every batch in a new file store (files created, written and synced
// per batch): that was 10% of `rhizon dev`'s CPU, and publishing in waves
// instead made it 8% faster (w1-command C=128, 4 alternating pairs; its
// authors measure R1 batches ~20% slower than async publish too,
// nats-server#7298). A replicated stream stages batches in memory and
// replicates each as one proposal, which is cheaper than one proposal per
// message.
func atomicBatches(cfg jetstream.StreamConfig) bool {
	return cfg.AllowAtomicPublish && (cfg.Replicas > 1 || cfg.Storage == jetstream.MemoryStorage)
}

// reconcile starts a worker for every local shard this node leads and stops
// the workers of shards it no longer leads (or no longer holds).
func (m *Manager) reconcile(ctx context.Context) {
	leading := map[uint32]Shard{}
	for _, s := range m.cfg.Shards() {
		if s.IsLeader() {
			leading[s.ID()] = s
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, w := range m.workers {
		if s, ok := leading[id]; !ok || s != w.sh || w.stopped() {
			w.stop()
			delete(m.workers, id)
		}
	}
	for id, s := range leading {
		if _, ok := m.workers[id]; !ok {
			m.workers[id] = m.startWorker(ctx, s)
		}
	}
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, w := range m.workers {
		w.stop()
		delete(m.workers, id)
	}
}

// sign is the HMAC of a message body under the cluster's signing key.
func (m *Manager) sign(data []byte) string {
	h := hmac.New(sha256.New, m.cfg.SigningKey)
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

func (m *Manager) verify(data []byte, sig string) bool {
	want, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	h := hmac.New(sha256.New, m.cfg.SigningKey)
	h.Write(data)
	return hmac.Equal(h.Sum(nil), want)
}

// SigningKey derives the key that authenticates internally published
// commands from the cluster secret.
func SigningKey(clusterSecret string) []byte {
	h := hmac.New(sha256.New, []byte("rhizon ingress signing key v1"))
	h.Write([]byte(clusterSecret))
	return h.Sum(nil)
}

// Enqueued is where SubmitAsync stored a command (declared in api/stream).
type Enqueued = stream.Enqueued

// Enqueue publishes an authorized command (security context set by the
// gateway) to its shard's ingress subject and returns once JetStream stored
// it. The message id derives from the address and idempotency key, so a
// retried SubmitAsync inside the duplicate window stores nothing new, and the
// engine's idempotency covers any later retry.
func (m *Manager) Enqueue(ctx context.Context, cmd actor.Command) (Enqueued, error) {
	select {
	case <-m.ready:
	case <-ctx.Done():
		return Enqueued{}, fmt.Errorf("ingress: streams not ready: %w", ctx.Err())
	}
	data, err := proto.Marshal(pb.FromCommand(&cmd))
	if err != nil {
		return Enqueued{}, fmt.Errorf("ingress: encode command: %w", err)
	}
	shard := m.cfg.ShardOf(cmd.Address)
	msg := nats.NewMsg(stream.IngressSubject(shard))
	msg.Data = data
	msg.Header.Set(stream.HeaderSignature, m.sign(data))
	ack, err := m.js.PublishMsg(ctx, msg, jetstream.WithMsgID(m.msgID(cmd.Address, cmd.IdempotencyKey)))
	if err != nil {
		return Enqueued{}, fmt.Errorf("ingress: publish: %w", err)
	}
	return Enqueued{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate, Shard: shard}, nil
}

// msgID is the JetStream message id of a command the nodes publish
// (SubmitAsync, relayed Sends, forwards): derived from the address and
// idempotency key, so a retry is dropped as a duplicate, and keyed by the
// signing key, so nobody without it can compute the id and publish first
// under it, which would make the nodes' command a "duplicate" never stored.
func (m *Manager) msgID(addr actor.Address, key string) string {
	h := hmac.New(sha256.New, m.cfg.SigningKey)
	h.Write([]byte("rhizon ingress msg id v2\x00"))
	h.Write(addr.Key())
	h.Write([]byte{0})
	h.Write([]byte(key))
	return "idem2-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// ShardsOf adapts a node's replica list (cluster.Node.Shards) to
// Config.Shards.
func ShardsOf[S Shard](list func() []S) func() []Shard {
	return func() []Shard {
		local := list()
		out := make([]Shard, len(local))
		for i, s := range local {
			out[i] = s
		}
		return out
	}
}
