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
	floors floors
}

func (m *Manager) startWorker(parent context.Context, s Shard) *worker {
	ctx, cancel := context.WithCancel(parent)
	w := &worker{m: m, sh: s, log: m.log.With("shard", s.ID()), cancel: cancel, done: make(chan struct{})}
	w.health.start(time.Now())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.consume(ctx) }()
	go func() { defer wg.Done(); w.relay(ctx) }()
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

// consume reads the shard's ingress subjects and proposes each command; the
// messages whose commands committed are purged from the stream (see
// consumer.go). It runs until the worker stops: when a pull ends (a NATS
// server died, the connection dropped), it reads the subject again from the
// first message still in the stream.
func (w *worker) consume(ctx context.Context) {
	var lw sync.WaitGroup
	var queues [lanes]chan delivery
	for i := range queues {
		queues[i] = make(chan delivery, 64)
		lw.Go(func() {
			for {
				select {
				case d := <-queues[i]:
					w.handle(ctx, d, &queues)
				case <-ctx.Done():
					// What is left is not finished: the next reader
					// of the subject has it.
					return
				}
			}
		})
	}
	lanesDone := make(chan struct{})
	var purger sync.WaitGroup
	purger.Go(func() { w.purgeLoop(lanesDone) })
	defer func() {
		lw.Wait()
		close(lanesDone)
		purger.Wait()
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
// one at this interval; missed heartbeats make the ordered consumer
// recreate itself (a new subscription each time: nats-server#3991 lost pull
// requests on a cluster just started), and fail after its reset attempts.
const (
	pullExpiry    = 10 * time.Second
	pullHeartbeat = 2 * time.Second
)

// pull reads src from the first message still in the stream and hands its
// messages to the lanes until the pull fails or ctx ends.
func (w *worker) pull(ctx context.Context, src source, queues *[lanes]chan delivery) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := w.orderedConsumer(cctx, src)
	cancel()
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(512), jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullHeartbeat))
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	w.m.metrics.track(src.shard, src.stream, cons, func() int { return w.floors.inFlight(src) })
	w.health.bound(src.stream)
	defer func() {
		// Gone at once rather than after its inactivity threshold: a node
		// that leads shards and loses them often would leave many behind.
		info := cons.CachedInfo()
		if info == nil || w.m.cfg.Conn.Status() != nats.CONNECTED {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = w.m.js.DeleteConsumer(dctx, src.stream, info.Name)
		cancel()
	}()
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
			if st := w.m.cfg.Conn.Status(); st != nats.CONNECTED {
				return fmt.Errorf("next message: %w (connection %s)", err, st)
			}
			return fmt.Errorf("next message: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			w.log.Error("ingress message without metadata; skipped", "subject", msg.Subject(), "err", err)
			continue
		}
		w.floors.delivered(src, md.Sequence.Stream)
		d := delivery{src: src, msg: msg, md: md, cmd: new(pb.Command), tries: 1}
		d.decodeErr = decodeCommand(msg, d.cmd)
		select {
		case queues[d.lane()] <- d:
		case <-ctx.Done():
			return nil
		}
	}
}

// delivery is a message on its way to a lane, with its command decoded once
// (the lane is picked from the command's entity, and handle needs it too).
type delivery struct {
	src       source
	msg       jetstream.Msg
	md        *jetstream.MsgMetadata
	cmd       *pb.Command
	decodeErr error
	tries     uint64 // this one is the tries-th (the worker retries, not JetStream)
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

// handle takes one message to its end: applied, rejected for good (recorded
// on the dead-letter subject) or passed on to its shard's subject, all of
// which finish it (the purge may pass it); or tried again later by this
// worker, or left to the next leader when this one stops leading.
func (w *worker) handle(ctx context.Context, d delivery, queues *[lanes]chan delivery) {
	msg, md := d.msg, d.md
	if d.tries > 1 {
		w.m.metrics.redelivered(ctx, w.sh.ID())
	}
	cmd, perm, retry := w.decode(&d)
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
			attribute.Int64("messaging.nats.stream_sequence", int64(md.Sequence.Stream)), attribute.Int64("messaging.nats.delivered", int64(d.tries)),
			tracectx.KeyShard.Int64(int64(w.sh.ID())))
		span.SetAttributes(tracectx.Command(&cmd)...)
	}
	if tp := tracectx.Format(span.SpanContext()); tp != "" {
		cmd.TraceParent = tp
	}
	if perm != "" {
		span.SetStatus(codes.Error, perm)
		w.dead(ctx, d, queues, "rejected", perm, nil)
		return
	}
	if retry != "" {
		span.SetStatus(codes.Error, retry)
		if int(d.tries) >= w.m.cfg.MaxDeliver {
			w.dead(ctx, d, queues, "poison", fmt.Sprintf("%s (after %d deliveries)", retry, d.tries), &cmd)
			return
		}
		w.later(ctx, d, queues)
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
			w.later(ctx, d, queues)
			return
		}
		w.finished(d)
		return
	}
	// Overloaded, outcome unknown, halted: the command is tried again here,
	// after a backoff, while the lane's later messages (this entity's among
	// them) wait; put aside at once it would let them apply first.
	// A retry of a command that did apply is a replay of its result, not
	// a second effect. After MaxDeliver tries it is put aside for a while.
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
			w.finished(d)
			return
		case errors.Is(err, shard.ErrNotLeader), errors.Is(err, shard.ErrClosed), ctx.Err() != nil:
			// Leadership moved or the node stops: the next leader reads
			// it from the stream (it stays unfinished, so unpurged).
			return
		case try >= w.m.cfg.MaxDeliver:
			w.log.Warn("ingress submit keeps failing; trying again later", "seq", md.Sequence.Stream, "tries", try, "err", err)
			w.later(ctx, d, queues)
			return
		}
		w.log.Debug("ingress submit failed; will retry", "seq", md.Sequence.Stream, "try", try, "err", err)
		if sleep(ctx, w.backoff(uint64(try))); ctx.Err() != nil {
			return
		}
	}
}

// finished lets the purge pass d's message.
func (w *worker) finished(d delivery) { w.floors.finished(d.src, d.md.Sequence.Stream) }

// later hands d back to its lane after the backoff of its tries, behind the
// messages that came meanwhile, and unfinished until then (the purge stops
// below it). A worker that stops first leaves it to the next leader.
func (w *worker) later(ctx context.Context, d delivery, queues *[lanes]chan delivery) {
	delay := w.backoff(d.tries)
	d.tries++
	time.AfterFunc(delay, func() {
		select {
		case queues[d.lane()] <- d:
		case <-ctx.Done():
		}
	})
}

// decode turns a message into an authorized command. perm is the reason it
// can never apply; retry the reason it cannot apply on this node now.
func (w *worker) decode(d *delivery) (cmd actor.Command, perm, retry string) {
	msg, md := d.msg, d.md
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
	if moved := msg.Headers().Get(stream.HeaderMovedSeq); moved != "" {
		if _, err := strconv.ParseUint(moved, 10, 64); err != nil {
			return cmd, "malformed: " + stream.HeaderMovedSeq + " is not a sequence number", ""
		}
		seq = moved // copied from the work-queue stream: the keys it had there
	}
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
func (w *worker) dead(ctx context.Context, d delivery, queues *[lanes]chan delivery, kind, reason string, authenticated *actor.Command) {
	msg, md := d.msg, d.md
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
		w.later(ctx, d, queues)
		return
	}
	w.log.Warn("ingress message dead-lettered", "seq", md.Sequence.Stream, "kind", kind, "reason", reason)
	w.m.metrics.deadLetter(ctx, w.sh.ID(), kind)
	w.finished(d)
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
