package ingress

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/api/stream"
)

// The work-queue layout of the ingress streams, before consumer.go's: a
// cluster that has them moves them over when its nodes start. nats-server
// cannot change a work-queue stream's retention, so the new streams have new
// names; two streams cannot share subjects, so the old one first gives its
// subjects up (retire), the new one takes them (publishes in between fail and
// are retried by the publishers; nats.go retries a publish nobody answered),
// and then every node copies what is left in the old one to the new one and
// deletes it (moveLegacy).
//
// Exactly once across the move: a copied message keeps, in HeaderMovedSeq,
// the sequence its derived command id and idempotency key came from, and the
// new stream starts after the old one's last sequence, so no message of the
// new stream derives a key an old one had. A message applied on the old
// stream whose removal did not happen yet (nodes of the old version still
// consume it during a rolling upgrade) is applied again as a replay.
const legacyIngressStream = "RHIZON_INGRESS"

func legacyProducerStream(account string) string { return "RHIZON_IN_" + account }

// legacyOf is the work-queue stream that held what name holds now.
func legacyOf(name string) string {
	if acct, ok := strings.CutPrefix(name, stream.ProducerStream("")); ok {
		return legacyProducerStream(acct)
	}
	return legacyIngressStream
}

// retiredSubject is where a retired stream's subjects went: nothing
// publishes there.
func retiredSubject(legacy string) string { return "rhizon.retired." + legacy }

// retire makes legacy give its subjects up, if it exists, and returns its
// last sequence (0 when it does not exist). Its consumers go first: their
// filters name the subjects it gives up.
func (m *Manager) retire(ctx context.Context, legacy string) (uint64, error) {
	s, err := m.js.Stream(ctx, legacy)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	cfg := s.CachedInfo().Config
	retired := []string{retiredSubject(legacy)}
	if !slices.Equal(cfg.Subjects, retired) {
		m.log.Info("moving the ingress stream to limits retention: its work-queue predecessor gives up its subjects", "stream", legacy)
		names := s.ConsumerNames(ctx)
		for name := range names.Name() {
			if err := s.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return 0, fmt.Errorf("delete consumer %s: %w", name, err)
			}
		}
		if err := names.Err(); err != nil {
			return 0, fmt.Errorf("list consumers: %w", err)
		}
		cfg.Subjects = retired
		if s, err = m.js.UpdateStream(ctx, cfg); err != nil {
			return 0, fmt.Errorf("retire: %w", err)
		}
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// moveLegacy copies every message left in the retired work-queue streams to
// the streams that took their subjects, then deletes them, retrying until
// they are gone or ctx ends. Every node runs it: copies carry message ids,
// so two nodes copying at once store each message once.
func (m *Manager) moveLegacy(ctx context.Context, names []string) {
	for _, name := range names {
		for ctx.Err() == nil {
			err := m.moveOne(ctx, name)
			if err == nil {
				break
			}
			m.log.Warn("moving a work-queue ingress stream's messages; will retry", "stream", name, "err", err)
			sleep(ctx, 2*time.Second)
		}
	}
}

func (m *Manager) moveOne(ctx context.Context, legacy string) error {
	s, err := m.js.Stream(ctx, legacy)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !slices.Equal(s.CachedInfo().Config.Subjects, []string{retiredSubject(legacy)}) {
		return errors.New("not retired yet")
	}
	moved := 0
	for seq := uint64(1); ; seq++ {
		// The next message at or after seq, whatever its subject.
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		seq = raw.Sequence
		msg := nats.NewMsg(raw.Subject)
		msg.Data = raw.Data
		for k, v := range raw.Header {
			if !strings.HasPrefix(k, "Nats-") {
				msg.Header[k] = v
			}
		}
		msg.Header.Set(stream.HeaderMovedSeq, strconv.FormatUint(seq, 10))
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = m.js.PublishMsg(pctx, msg, jetstream.WithMsgID(fmt.Sprintf("moved-%s-%d", legacy, seq)))
		cancel()
		if err != nil {
			return fmt.Errorf("copy seq %d: %w", seq, err)
		}
		if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
			return fmt.Errorf("delete seq %d: %w", seq, err)
		}
		moved++
	}
	if err := m.js.DeleteStream(ctx, legacy); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete stream: %w", err)
	}
	m.log.Info("work-queue ingress stream moved over and deleted", "stream", legacy, "messages", moved)
	return nil
}
