package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/tracectx"
	"github.com/rhizon/rhizon/relay"
	"github.com/rhizon/rhizon/shard"
)

var tracer = otel.Tracer("github.com/rhizon/rhizon/ingress")

// lanes is how many messages of one shard are in flight at once. Messages
// of one entity share a lane, so they are proposed in the order they were
// published; different entities overlap, so the proposer packs them into
// one Raft entry.
const lanes = 64

// worker is the ingress consumer and outbox relay of one shard this node
// leads. It stops when the node stops leading the shard.
type worker struct {
	m      *Manager
	sh     Shard
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	health workerHealth
	alive  keepAlive
	acks   *acker
}

func (m *Manager) startWorker(parent context.Context, s Shard) *worker {
	ctx, cancel := context.WithCancel(parent)
	w := &worker{m: m, sh: s, log: m.log.With("shard", s.ID()), cancel: cancel, done: make(chan struct{}), acks: newAcker(m.cfg.AckInterval)}
	w.health.start(time.Now())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); w.consume(ctx) }()
	go func() { defer wg.Done(); w.relay(ctx) }()
	go func() { defer wg.Done(); w.alive.run(ctx, m.cfg.AckWait/3) }()
	go func() { wg.Wait(); close(w.done) }()
	return w
}

func (w *worker) stop() {
	w.cancel()
	<-w.done
}

func (w *worker) stopped() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// consume pulls the shard's ingress subject and proposes each command; a
// message is acked only after its command is applied (committed) here. It
// runs until the worker stops: when the pull ends (the consumer's JetStream
// leader moved, a NATS server died, the connection dropped), it binds to the
// durable consumer again.
func (w *worker) consume(ctx context.Context) {
	var aw sync.WaitGroup
	aw.Go(func() { w.acks.run(ctx) })
	// Runs last: once the lanes are done, the acks they left are sent.
	defer func() { aw.Wait(); w.acks.flush() }()
	var lw sync.WaitGroup
	var queues [lanes]chan delivery
	for i := range queues {
		queues[i] = make(chan delivery, 64)
		lw.Add(1)
		go func(q chan delivery) {
			defer lw.Done()
			for d := range q {
				w.handle(ctx, d)
			}
		}(queues[i])
	}
	defer func() {
		for _, q := range queues {
			close(q)
		}
		lw.Wait()
	}()
	defer func() {
		for _, id := range w.members() {
			w.m.metrics.untrack(id)
		}
	}()
	// One pull per stream: the nodes' own, and each producer account's.
	var pw sync.WaitGroup
	for _, src := range w.sources() {
		pw.Go(func() {
			for ctx.Err() == nil {
				if err := w.pull(ctx, src, &queues); err != nil && ctx.Err() == nil {
					w.health.failing(src.stream, err, time.Now())
					w.log.Warn("ingress consumer; binding again", "stream", src.stream, "err", err)
					sleep(ctx, time.Second)
				}
			}
		})
	}
	pw.Wait()
}

// source is a stream the shard's commands arrive on, and the subject of
// this shard in it.
type source struct {
	stream, subject string
	shard           uint32
}

// members is the shards the worker's Raft group carries: it consumes the
// subject of each (publishers name the shard, not the group).
func (w *worker) members() []uint32 {
	if m, ok := w.sh.(interface{ Members() []uint32 }); ok {
		return m.Members()
	}
	return []uint32{w.sh.ID()}
}

// carries reports whether shard is one of the worker's.
func (w *worker) carries(shard uint32) bool { return slices.Contains(w.members(), shard) }

func (w *worker) sources() []source {
	var out []source
	for _, id := range w.members() {
		out = append(out, source{stream.IngressStream, stream.IngressSubject(id), id})
		for _, a := range w.m.producerAccounts() {
			out = append(out, source{stream.ProducerStream(a), stream.ProducerSubject(a, id), id})
		}
	}
	return out
}

// A pull request lives this long on the server, which heartbeats an idle
// one at this interval; two missed heartbeats end the pull.
const (
	pullExpiry    = 10 * time.Second
	pullHeartbeat = 2 * time.Second
)

// pull binds to the shard's durable consumer and hands its messages to the
// lanes until the pull fails or ctx ends.
func (w *worker) pull(ctx context.Context, src source, queues *[lanes]chan delivery) error {
	id := src.shard
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := w.bindConsumer(cctx, src)
	cancel()
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	w.m.metrics.track(id, src.stream, cons)
	w.health.bound(src.stream)
	for {
		err := w.pullMessages(ctx, cons, queues)
		if !errors.Is(err, jetstream.ErrNoHeartbeat) {
			return err
		}
		if st := w.m.cfg.Conn.Status(); st != nats.CONNECTED {
			// Not a lost pull but a lost server: a new subscription would
			// only wait in the client's reconnect buffer while health said
			// the consumer runs. Fail, so health says it does not, and bind
			// again once the connection is back.
			return fmt.Errorf("next message: %w (connection %s)", err, st)
		}
		w.log.Warn("ingress pull heard nothing; pulling on a new subscription", "err", err)
	}
}

// pullMessages pulls cons on a subscription of its own until the pull fails
// or ctx ends. A pull request waits on the consumer's JetStream leader; when
// that leader dies or is not elected yet, the request is lost without a word
// to this client, and only missing heartbeats tell (nats-server#3991). Then
// the pull ends and the caller starts another on a new subscription:
// re-pulling on the same one (nats.go's default) was not enough on a cluster
// just started, where a shard's consumer heard nothing on it for minutes
// while the node's other shards ran, and nats.go's default heartbeat (15 s)
// meant 30 s before it noticed at all.
func (w *worker) pullMessages(ctx context.Context, cons jetstream.Consumer, queues *[lanes]chan delivery) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(512), jetstream.PullExpiry(pullExpiry),
		jetstream.PullHeartbeat(pullHeartbeat), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		it.Stop()
	}()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("next message: %w", err)
		}
		d := delivery{msg: msg, cmd: new(pb.Command)}
		d.decodeErr = decodeCommand(msg, d.cmd)
		queues[d.lane()] <- d
	}
}

// delivery is a message on its way to a lane, with its command decoded once
// (the lane is picked from the command's entity, and handle needs it too).
type delivery struct {
	msg       jetstream.Msg
	cmd       *pb.Command
	decodeErr error
}

// lane picks the lane from the message's entity. A message that does not
// decode goes to lane 0 and is rejected there.
func (d *delivery) lane() int {
	if d.decodeErr != nil || d.cmd.Address == nil {
		return 0
	}
	h := fnv.New32a()
	h.Write(d.cmd.Address.ToActor().Key())
	return int(h.Sum32() % lanes)
}

func decodeCommand(msg jetstream.Msg, c *pb.Command) error {
	if strings.EqualFold(msg.Headers().Get(stream.HeaderEncoding), "json") {
		return protojson.Unmarshal(msg.Data(), c)
	}
	return proto.Unmarshal(msg.Data(), c)
}

// handle takes one message to an ack: applied, rejected for good (recorded on
// the dead-letter subject), or handed back for a later delivery.
func (w *worker) handle(ctx context.Context, d delivery) {
	msg := d.msg
	md, err := msg.Metadata()
	if err != nil {
		w.log.Error("ingress message without metadata", "err", err)
		_ = msg.Term()
		return
	}
	if md.NumDelivered > 1 {
		w.m.metrics.redelivered(ctx, w.sh.ID())
	}
	cmd, perm, retry := w.decode(&d, md)
	// The consumer span continues the producer's trace: the message's
	// traceparent header, else the command's own field. The command then
	// carries this span's context into the log, so its apply is a child.
	parent := tracectx.Parse(tracectx.FromNATS(msg.Headers()))
	if !parent.IsValid() {
		parent = tracectx.Parse(cmd.TraceParent)
	}
	ctx, span := tracer.Start(trace.ContextWithRemoteSpanContext(ctx, parent), "ingress.consume",
		trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", msg.Subject()),
			attribute.Int64("messaging.nats.stream_sequence", int64(md.Sequence.Stream)), attribute.Int64("messaging.nats.delivered", int64(md.NumDelivered)),
			tracectx.KeyShard.Int64(int64(w.sh.ID())))
		span.SetAttributes(tracectx.Command(&cmd)...)
	}
	if tp := tracectx.Format(span.SpanContext()); tp != "" {
		cmd.TraceParent = tp
	}
	if perm != "" {
		span.SetStatus(codes.Error, perm)
		w.dead(ctx, msg, md, "rejected", perm, nil)
		return
	}
	if retry != "" {
		span.SetStatus(codes.Error, retry)
		if int(md.NumDelivered) >= w.m.cfg.MaxDeliver {
			w.dead(ctx, msg, md, "poison", fmt.Sprintf("%s (after %d deliveries)", retry, md.NumDelivered), &cmd)
			return
		}
		_ = msg.NakWithDelay(w.backoff(md.NumDelivered))
		return
	}
	if to := w.m.cfg.ShardOf(cmd.Address); !w.carries(to) {
		// Published to the wrong shard's subject: pass it on rather than
		// apply it on a shard that does not own the entity.
		subj := stream.IngressSubject(to)
		if acct := stream.ProducerOf(msg.Subject()); acct != "" {
			subj = stream.ProducerSubject(acct, to) // still that producer's
		}
		fwd := nats.NewMsg(subj)
		fwd.Data, fwd.Header = msg.Data(), maps.Clone(msg.Headers())
		// A Send the relay published in an atomic batch carries the
		// batch's headers: published with them, alone, it would be
		// refused as a broken batch.
		for _, h := range []string{"Nats-Batch-Id", "Nats-Batch-Sequence", "Nats-Batch-Commit"} {
			fwd.Header.Del(h)
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := w.m.js.PublishMsg(pctx, fwd, jetstream.WithMsgID(w.m.msgID(cmd.Address, cmd.IdempotencyKey)))
		cancel()
		if err != nil {
			_ = msg.NakWithDelay(w.backoff(md.NumDelivered))
			return
		}
		_ = msg.Ack()
		return
	}
	w.alive.add(msg)
	defer w.alive.remove(msg)
	// Overloaded, outcome unknown, halted: the command is tried again here,
	// after a backoff, while the lane's later messages (this entity's among
	// them) wait; handed back to JetStream it would let them apply first.
	// A retry of a command that did apply is a replay of its result, not
	// a second effect. After MaxDeliver tries JetStream redelivers it later.
	for try := 1; ; try++ {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := w.sh.Submit(sctx, cmd)
		cancel()
		switch {
		case err == nil:
			failpoint("ingress-after-commit")
			w.m.metrics.applied(ctx, w.sh.ID(), &res)
			if span.IsRecording() {
				span.SetAttributes(tracectx.Result(&res)...)
			}
			w.acks.ack(msg) // sent with others (see acker)
			return
		case errors.Is(err, shard.ErrNotLeader), errors.Is(err, shard.ErrClosed), ctx.Err() != nil:
			// Leadership moved or the node stops: the next leader takes it.
			_ = msg.Nak()
			return
		case try >= w.m.cfg.MaxDeliver:
			w.log.Warn("ingress submit keeps failing; handing the message back", "seq", md.Sequence.Stream, "tries", try, "err", err)
			_ = msg.NakWithDelay(w.backoff(md.NumDelivered))
			return
		}
		w.log.Debug("ingress submit failed; will retry", "seq", md.Sequence.Stream, "try", try, "err", err)
		if sleep(ctx, w.backoff(uint64(try))); ctx.Err() != nil {
			_ = msg.Nak()
			return
		}
	}
}

// decode turns a message into an authorized command. perm is the reason it
// can never apply; retry the reason it cannot apply on this node now.
func (w *worker) decode(d *delivery, md *jetstream.MsgMetadata) (cmd actor.Command, perm, retry string) {
	msg := d.msg
	if d.decodeErr != nil {
		return cmd, "malformed: " + d.decodeErr.Error(), ""
	}
	cmd = d.cmd.ToActor()
	acct := stream.ProducerOf(msg.Subject())
	switch sig, auth := msg.Headers().Get(stream.HeaderSignature), msg.Headers().Get(stream.HeaderAuthorization); {
	case acct != "":
		// A producer account's message: the token it connected with is
		// its identity; a signature is never trusted from a producer.
		p, ok := w.m.producers[acct]
		if !ok || w.m.cfg.Authenticate == nil {
			return cmd, "unauthenticated: producer account " + acct + " is not known on this node", ""
		}
		if auth != "" {
			if tok, ok := bearer(auth); !ok || tok != p {
				return cmd, "unauthenticated: " + stream.HeaderAuthorization + " names another token than the NATS connection's; leave it out", ""
			}
		}
		sec, err := w.m.cfg.Authenticate(p)
		if err != nil {
			return cmd, "unauthenticated: " + err.Error(), ""
		}
		cmd.Security = sec
		cmd.Address = FillScope(cmd.Address, sec)
	case sig != "":
		if !w.m.verify(msg.Data(), sig) {
			return cmd, "unauthenticated: bad " + stream.HeaderSignature, ""
		}
	case auth != "" && w.m.cfg.Authenticate != nil:
		tok, ok := bearer(auth)
		if !ok {
			return cmd, "unauthenticated: " + stream.HeaderAuthorization + " must be \"Bearer <token>\"", ""
		}
		sec, err := w.m.cfg.Authenticate(tok)
		if err != nil {
			return cmd, "unauthenticated: " + err.Error(), ""
		}
		cmd.Security = sec
		cmd.Address = FillScope(cmd.Address, sec)
	default:
		return cmd, "unauthenticated: set " + stream.HeaderAuthorization + ": Bearer <token>", ""
	}
	// A producer that sets no id or key gets ones derived from the stream
	// sequence, which a redelivery keeps: it still applies once. Each
	// producer's stream counts its own sequence, so its account is in them.
	seq := strconv.FormatUint(md.Sequence.Stream, 10)
	if acct != "" {
		seq = acct + "-" + seq
	}
	if cmd.ID == "" {
		cmd.ID = "js-" + seq
	}
	if cmd.IdempotencyKey == "" {
		cmd.IdempotencyKey = "js/" + seq
	}
	if err := cmd.Validate(); err != nil {
		return cmd, "invalid: " + err.Error(), ""
	}
	if !w.m.cfg.Registry.Known(cmd.Address.ActorType) {
		return cmd, "", fmt.Sprintf("actor type %q is not known on this node", cmd.Address.ActorType)
	}
	return cmd, "", ""
}

// bearer is the token of an Authorization value; the scheme is
// case-insensitive, as in HTTP (RFC 9110, section 11.1).
func bearer(auth string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(auth), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func (w *worker) backoff(delivered uint64) time.Duration {
	b := w.m.cfg.Backoff
	i := int(delivered) - 1
	if i >= len(b) {
		i = len(b) - 1
	}
	return b[max(i, 0)]
}

// dead publishes the message to the shard's dead-letter subject with the
// reason, then acks it: it never blocks the shard again. If the dead letter
// cannot be stored, the message is redelivered later instead of lost.
// authenticated is the command as decode authorized it, for a message that
// could apply once the node can take it (a redrive); nil otherwise.
func (w *worker) dead(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, kind, reason string, authenticated *actor.Command) {
	dl := nats.NewMsg(stream.DeadSubject(w.sh.ID()))
	// Only a prefix of the body: a junk message of several MiB must not be
	// copied whole and kept for 30 days. Size and digest identify it.
	body := msg.Data()
	dl.Data = body[:min(len(body), stream.DeadLetterMaxBody)]
	sum := sha256.Sum256(body)
	for k, v := range msg.Headers() {
		if k != stream.HeaderAuthorization && k != stream.HeaderSignature && !strings.HasPrefix(k, "Nats-") {
			dl.Header[k] = v
		}
	}
	// Never a producer's own redrive record: only the one signed below.
	dl.Header.Del(stream.HeaderRedrive)
	dl.Header.Del(stream.HeaderRedriveSignature)
	if authenticated != nil {
		w.m.redriveRecord(authenticated, dl.Header)
	}
	dl.Header.Set(stream.HeaderKind, kind)
	dl.Header.Set(stream.HeaderReason, reason)
	dl.Header.Set(stream.HeaderSize, strconv.Itoa(len(body)))
	dl.Header.Set(stream.HeaderDigest, "sha256="+hex.EncodeToString(sum[:]))
	dl.Header.Set(stream.HeaderSource, fmt.Sprintf("%s %s seq %d", md.Stream, msg.Subject(), md.Sequence.Stream))
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := w.m.js.PublishMsg(pctx, dl, jetstream.WithMsgID(fmt.Sprintf("dead-%s-%d", md.Stream, md.Sequence.Stream)))
	cancel()
	if err != nil {
		w.log.Warn("dead letter not stored; will retry", "seq", md.Sequence.Stream, "err", err)
		_ = msg.NakWithDelay(w.backoff(md.NumDelivered))
		return
	}
	w.log.Warn("ingress message dead-lettered", "seq", md.Sequence.Stream, "kind", kind, "reason", reason)
	w.m.metrics.deadLetter(ctx, w.sh.ID(), kind)
	_ = msg.Ack()
}

// keepAlive tells JetStream the messages the lanes are working on are in
// progress while a submit takes long, so a short AckWait (quick redelivery
// after a crash or a leader change) does not redeliver them meanwhile. One
// ticker for the whole worker: a goroutine and a ticker per message cost more
// than the rest of the lane's own work.
type keepAlive struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]struct{}
}

func (k *keepAlive) add(msg jetstream.Msg) {
	k.mu.Lock()
	if k.msgs == nil {
		k.msgs = map[jetstream.Msg]struct{}{}
	}
	k.msgs[msg] = struct{}{}
	k.mu.Unlock()
}

func (k *keepAlive) remove(msg jetstream.Msg) {
	k.mu.Lock()
	delete(k.msgs, msg)
	k.mu.Unlock()
}

// run sends every in-flight message's progress each interval until ctx
// ends. A message acked meanwhile is not sent again (the client knows it
// was acked), and the server ignores progress on one it no longer holds.
func (k *keepAlive) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var batch []jetstream.Msg
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		batch = batch[:0]
		for m := range k.msgs {
			batch = append(batch, m)
		}
		k.mu.Unlock()
		for _, m := range batch {
			_ = m.InProgress()
		}
	}
}

// DefaultWorkspace is the workspace a command gets when it names none and
// its token's scope allows every workspace of the tenant (as
// gateway.DefaultWorkspace).
const DefaultWorkspace = "default"

// FillScope completes an address that names no tenant or workspace from the
// token's scopes exactly as the gateway does: the tenant of the first scope;
// the workspace of the first scope of that tenant, "*" meaning
// DefaultWorkspace, or else the first scope's.
func FillScope(a actor.Address, sec actor.Security) actor.Address {
	if len(sec.Scopes) == 0 {
		return a
	}
	def := sec.Scopes[0]
	if def.Workspace == "*" {
		def.Workspace = DefaultWorkspace
	}
	if a.Tenant == "" {
		a.Tenant = def.Tenant
	}
	if a.Workspace == "" {
		a.Workspace = def.Workspace
		for _, s := range sec.Scopes {
			if s.Tenant == a.Tenant {
				a.Workspace = s.Workspace
				if a.Workspace == "*" {
					a.Workspace = DefaultWorkspace
				}
				break
			}
		}
	}
	return a
}

// relay publishes the shard's outbox (package relay) with the manager's
// connection, names and metrics.
func (w *worker) relay(ctx context.Context) {
	cfg := w.m.relayConfig()
	cfg.Log = w.log
	cfg.CaughtUp = func(uint32) { w.health.caughtUp(time.Now()) }
	relay.New(w.sh, cfg).Run(ctx)
}

// relayConfig is the configuration of this node's relays (and of Republish,
// which must publish exactly as they do).
func (m *Manager) relayConfig() relay.Config {
	cfg := relay.Config{
		Conn:           m.cfg.Conn,
		JS:             m.js,
		AckInterval:    m.cfg.RelayAckInterval,
		Atomic:         m.atomicEvents.Load,
		AtomicCommands: m.atomicIngress.Load,
		ShardOf:        m.cfg.ShardOf,
		Sign:           m.sign,
		MsgID:          m.msgID,
		EventsFormat:   m.cfg.EventsFormat,
		Published:      m.metrics.published,
		Backlog:        m.metrics.backlog,
		Log:            m.log,
	}
	if m.cfg.Submit != nil {
		cfg.Send = func(ctx context.Context, cmd actor.Command) error {
			_, err := m.cfg.Submit(ctx, cmd)
			return err
		}
		cfg.Drained, cfg.Known, cfg.Sent, cfg.DrainedEvery = m.drained, m.cfg.Registry.Known, m.metrics.sent, m.drainedEvery
	}
	return cfg
}

// drained reports whether shard's subject of the ingress stream holds no
// message: every command published to it was applied (the work queue
// removes a message once its command committed and was acked).
func (m *Manager) drained(ctx context.Context, shard uint32) (bool, error) {
	var s jetstream.Stream
	if p := m.ingress.Load(); p != nil {
		s = *p // one request, not a second to look the stream up
	} else {
		var err error
		if s, err = m.js.Stream(ctx, stream.IngressStream); err != nil {
			return false, err
		}
	}
	subj := stream.IngressSubject(shard)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return false, err
	}
	return info.State.Subjects[subj] == 0, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
