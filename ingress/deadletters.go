package ingress

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
)

// redriveDomain separates the redrive signature from the command signature:
// a signed redrive record is not a signed ingress message, nor the reverse.
const redriveDomain = "rhizon redrive v1\x00"

// redriveRecord adds to h the command as decode authorized it and the
// node's signature over it, when it is small enough to keep.
func (m *Manager) redriveRecord(cmd *actor.Command, h nats.Header) {
	data, err := proto.Marshal(pb.FromCommand(cmd))
	if err != nil || len(data) > stream.RedriveMaxCommand {
		return
	}
	h.Set(stream.HeaderRedrive, base64.StdEncoding.EncodeToString(data))
	h.Set(stream.HeaderRedriveSignature, m.sign(append([]byte(redriveDomain), data...)))
}

// redriveCommand returns the signed command of a dead letter's headers, or
// why it has none.
func (m *Manager) redriveCommand(h nats.Header) ([]byte, string) {
	rec, sig := h.Get(stream.HeaderRedrive), h.Get(stream.HeaderRedriveSignature)
	switch kind := h.Get(stream.HeaderKind); {
	case rec == "" && kind == "rejected":
		return nil, "it was rejected for good (" + h.Get(stream.HeaderReason) + "): fix the command and publish it again"
	case rec == "":
		return nil, "it carries no redrive record (a command over " + strconv.Itoa(stream.RedriveMaxCommand) + " bytes, or dead-lettered by an older node): publish it again"
	}
	data, err := base64.StdEncoding.DecodeString(rec)
	if err != nil || !m.verify(append([]byte(redriveDomain), data...), sig) {
		return nil, "its redrive record's signature does not verify under this cluster's key"
	}
	return data, ""
}

// DeadLetters lists up to limit dead letters after sequence after, oldest
// first, and the sequence to continue after (0: no more).
func (m *Manager) DeadLetters(ctx context.Context, after uint64, limit int) ([]stream.DeadLetter, uint64, error) {
	st, err := m.deadStream(ctx)
	if err != nil {
		return nil, 0, err
	}
	var out []stream.DeadLetter
	for seq := after + 1; len(out) < limit; {
		msg, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(stream.DeadPrefix+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, 0, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("ingress: read dead letter %d: %w", seq, err)
		}
		out = append(out, m.deadLetter(msg))
		seq = msg.Sequence + 1
	}
	if len(out) == 0 {
		return out, 0, nil
	}
	return out, out[len(out)-1].Sequence, nil
}

func (m *Manager) deadStream(ctx context.Context) (jetstream.Stream, error) {
	select {
	case <-m.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("ingress: streams not ready: %w", ctx.Err())
	}
	st, err := m.js.Stream(ctx, stream.DeadStream)
	if err != nil {
		return nil, fmt.Errorf("ingress: dead-letter stream: %w", err)
	}
	return st, nil
}

func (m *Manager) deadLetter(msg *jetstream.RawStreamMsg) stream.DeadLetter {
	h := msg.Header
	d := stream.DeadLetter{
		Sequence: msg.Sequence, Subject: msg.Subject, Time: msg.Time, Body: msg.Data,
		Kind: h.Get(stream.HeaderKind), Reason: h.Get(stream.HeaderReason), Source: h.Get(stream.HeaderSource),
		Digest: h.Get(stream.HeaderDigest), Headers: map[string]string{},
	}
	if n, err := strconv.ParseUint(strings.TrimPrefix(msg.Subject, stream.DeadPrefix), 10, 32); err == nil {
		d.Shard = uint32(n)
	}
	d.Size, _ = strconv.Atoi(h.Get(stream.HeaderSize))
	for k := range h {
		switch k {
		case stream.HeaderKind, stream.HeaderReason, stream.HeaderSource, stream.HeaderDigest, stream.HeaderSize,
			stream.HeaderRedrive, stream.HeaderRedriveSignature:
		default:
			if !strings.HasPrefix(k, "Nats-") {
				d.Headers[k] = h.Get(k)
			}
		}
	}
	var c pb.Command
	var err error
	if strings.EqualFold(h.Get(stream.HeaderEncoding), "json") {
		err = protojson.Unmarshal(msg.Data, &c)
	} else {
		err = proto.Unmarshal(msg.Data, &c)
	}
	if err == nil && c.GetAddress() != nil {
		d.Command, _ = protojson.MarshalOptions{UseProtoNames: true}.Marshal(&c)
	}
	_, why := m.redriveCommand(h)
	d.Redrivable, d.NotRedrivable = why == "", why
	return d
}

// Redrive publishes dead letter seq's command again to its shard's ingress
// subject, signed by this node, with the security context the ingress had
// authenticated when it dead-lettered it. Its message id is derived from the
// dead letter, so redriving twice within the duplicate window stores it
// once; the command keeps its idempotency key, so it applies at most once
// whatever happens.
func (m *Manager) Redrive(ctx context.Context, seq uint64) (stream.Enqueued, error) {
	st, err := m.deadStream(ctx)
	if err != nil {
		return stream.Enqueued{}, err
	}
	msg, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && !strings.HasPrefix(msg.Subject, stream.DeadPrefix)) {
		return stream.Enqueued{}, fmt.Errorf("%w: %d", stream.ErrDeadLetterNotFound, seq)
	}
	if err != nil {
		return stream.Enqueued{}, fmt.Errorf("ingress: read dead letter %d: %w", seq, err)
	}
	data, why := m.redriveCommand(msg.Header)
	if why != "" {
		return stream.Enqueued{}, fmt.Errorf("%w: dead letter %d: %s", stream.ErrNotRedrivable, seq, why)
	}
	var c pb.Command
	if err := proto.Unmarshal(data, &c); err != nil {
		return stream.Enqueued{}, fmt.Errorf("%w: dead letter %d: its redrive record does not decode: %v", stream.ErrNotRedrivable, seq, err)
	}
	shard := m.cfg.ShardOf(c.GetAddress().ToActor())
	out := nats.NewMsg(stream.IngressSubject(shard))
	out.Data = data
	out.Header.Set(stream.HeaderSignature, m.sign(data))
	if tp := msg.Header.Get("traceparent"); tp != "" {
		out.Header.Set("traceparent", tp)
	}
	ack, err := m.js.PublishMsg(ctx, out, jetstream.WithMsgID(fmt.Sprintf("redrive-%s-%d", stream.DeadStream, seq)))
	if err != nil {
		return stream.Enqueued{}, fmt.Errorf("ingress: publish: %w", err)
	}
	return stream.Enqueued{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate, Shard: shard}, nil
}
