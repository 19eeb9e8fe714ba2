package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
)

// WatchFilter selects events; it is declared in api/stream so that the
// gateway need not link NATS.
type WatchFilter = stream.WatchFilter

// watchInactiveThreshold is how long JetStream keeps the consumer of a watch
// nobody pulls from (see Watch).
const watchInactiveThreshold = 30 * time.Second

// Watch calls fn for every event of the filter (and with f.Rejections every
// rejection), in stream order (which is per-entity order: the relay never
// has two records of an entity in flight), until ctx ends or fn returns an
// error.
func (m *Manager) Watch(ctx context.Context, f WatchFilter, fn func(*pb.WatchEvent) error) error {
	if f.Tenant == "" || f.Workspace == "" {
		return errors.New("ingress: watch needs a tenant and a workspace")
	}
	if f.EntityID != "" && f.ActorType == "" {
		return errors.New("ingress: watch by entity needs its actor type")
	}
	select {
	case <-m.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	// The consumer is deleted when the watch ends (below); the inactivity
	// threshold is only the fallback for a node that dies with its watches
	// open on an external NATS. A pull consumer with a waiting request is
	// active, so an idle but connected watch is not reaped.
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{stream.EventFilter(f.Tenant, f.Workspace, f.ActorType, f.EntityID)},
		InactiveThreshold: watchInactiveThreshold,
	}
	// With JSON events only, the events are read from their JSON subjects,
	// which do not name the entity: it is filtered below.
	jsonOnly := m.cfg.EventsFormat == stream.FormatJSON
	if jsonOnly {
		cfg.FilterSubjects = []string{stream.JSONEventFilter(f.Tenant, f.Workspace, f.ActorType)}
	}
	if f.Rejections {
		cfg.FilterSubjects = append(cfg.FilterSubjects, stream.RejectionFilter(f.Tenant, f.Workspace, f.ActorType, f.EntityID))
	}
	switch {
	case f.After > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.After+1
	case f.FromBeginning:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	default:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	cons, err := m.js.OrderedConsumer(ctx, stream.EventsStream, cfg)
	if err != nil {
		return fmt.Errorf("ingress: watch: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("ingress: watch: %w", err)
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		it.Stop()
		// Stop leaves the consumer on the server until its inactivity
		// threshold; a client that opens and drops watches in a loop
		// would pile them up. Delete it now.
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = m.js.DeleteConsumer(dctx, stream.EventsStream, info.Name)
			cancel()
		}
	}()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("ingress: watch: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("ingress: watch: %w", err)
		}
		out := &pb.WatchEvent{Sequence: md.Sequence.Stream}
		typ := ""
		if strings.HasSuffix(msg.Subject(), "."+stream.RejectionSuffix) {
			out.Rejection = &pb.Rejection{}
			if err := proto.Unmarshal(msg.Data(), out.Rejection); err != nil {
				return fmt.Errorf("ingress: watch: rejection at %d: %w", md.Sequence.Stream, err)
			}
			typ = out.Rejection.Type
		} else if jsonOnly {
			var env stream.EventEnvelope
			if err := json.Unmarshal(msg.Data(), &env); err != nil {
				return fmt.Errorf("ingress: watch: JSON event at %d: %w", md.Sequence.Stream, err)
			}
			if f.EntityID != "" && env.EntityID != f.EntityID {
				continue
			}
			ev := env.ToActor()
			out.Event = pb.FromEvent(&ev)
			typ = out.Event.Type
		} else {
			out.Event = &pb.Event{}
			if err := proto.Unmarshal(msg.Data(), out.Event); err != nil {
				return fmt.Errorf("ingress: watch: event at %d: %w", md.Sequence.Stream, err)
			}
			typ = out.Event.Type
		}
		if f.EventType != "" && typ != f.EventType {
			continue
		}
		if err := fn(out); err != nil {
			return err
		}
	}
}
