package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// errCountReached stops a watch once --count events were printed.
var errCountReached = errors.New("count reached")

func watchCmd() *cobra.Command {
	f := &clientFlags{}
	var actorType, entity, eventType string
	var after uint64
	var fromBeginning, rejections bool
	var count int
	c := &cobra.Command{
		Use:   "watch",
		Short: "Print committed events as they happen (the node needs NATS)",
		Long: "Print the committed events of a tenant/workspace (default: the token's own), optionally of one\n" +
			"actor type, entity and event type, one line per event, each entity's in version order\n" +
			"(-o json: one JSON object per line). Only new events unless --after or --from-beginning.\n" +
			"A broken stream is resumed after the last sequence printed. --rejections also prints the\n" +
			"rejections recorded for those entities (conflicts, business rules, ...), one line each.\n" +
			"Runs until Ctrl-C, --count events or --timeout. Exit status: 0 on Ctrl-C, after --count\n" +
			"events or at --timeout without --count; 1 error (or --timeout before --count events); 2 usage.",
		Example: "  rhizon watch --actor-type counter --from-beginning\n" +
			"  rhizon watch --entity counter/c1 --after 42 -o json\n" +
			"  rhizon watch --type kv --event-type updated --count 1",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			req, err := watchRequest(f, actorType, entity, eventType, after, fromBeginning)
			if err != nil {
				return err
			}
			req.IncludeRejections = rejections
			if count < 0 {
				return &exitErr{exitUsage, fmt.Errorf("--count %d: give a positive number of events, or 0 for no limit", count)}
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			sctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			w := c.OutOrStdout()
			n := 0
			err = cl.Watch(sctx, req, func(ev *pb.WatchEvent) error {
				if err := printWatchEvent(w, f.output, ev); err != nil {
					return err
				}
				n++
				if count > 0 && n >= count {
					return errCountReached
				}
				return nil
			})
			switch {
			case errors.Is(err, errCountReached):
				return nil
			case sctx.Err() != nil && ctx.Err() == nil:
				return nil // Ctrl-C or SIGTERM: the way a watch normally ends
			case errors.Is(err, context.DeadlineExceeded) && count == 0:
				return nil // --timeout bounded an open-ended watch
			case errors.Is(err, context.DeadlineExceeded):
				return &exitErr{exitError, fmt.Errorf("--timeout %v passed after %d of %d events", f.timeout, n, count)}
			}
			return f.callErr(err)
		},
	}
	f.registerConn(c)
	fs := c.Flags()
	fs.DurationVar(&f.timeout, "timeout", 0, "stop after this long (0: no limit)")
	fs.StringVar(&actorType, "actor-type", "", "only events of this actor type (alias --type)")
	fs.StringVar(&entity, "entity", "", "only events of this entity: <entity_id> with --actor-type, or <actor_type>/<entity_id>")
	fs.StringVar(&eventType, "event-type", "", "only events of this type: evt.<actor_type>.<name>, or the name alone with --actor-type")
	fs.Uint64Var(&after, "after", 0, "start after this events-stream sequence (the first column of the output)")
	fs.BoolVar(&fromBeginning, "from-beginning", false, "start with the oldest event the stream keeps")
	fs.IntVar(&count, "count", 0, "exit 0 after this many events (0: no limit)")
	fs.BoolVar(&rejections, "rejections", false, "also print rejections (they count for --count)")
	// --type reads naturally next to --entity and --event-type.
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "type" {
			name = "actor-type"
		}
		return pflag.NormalizedName(name)
	})
	return c
}

// watchRequest checks the filter flags together and builds the request.
func watchRequest(f *clientFlags, actorType, entity, eventType string, after uint64, fromBeginning bool) (*pb.WatchRequest, error) {
	if strings.Contains(entity, "/") {
		a, err := parseTarget(entity)
		if err != nil {
			return nil, err
		}
		if actorType != "" && actorType != a.ActorType {
			return nil, &exitErr{exitUsage, fmt.Errorf("--entity %s names actor type %q but --actor-type is %q; give one", entity, a.ActorType, actorType)}
		}
		actorType, entity = a.ActorType, a.EntityId
	}
	if entity != "" && actorType == "" {
		return nil, &exitErr{exitUsage, fmt.Errorf("--entity %s needs --actor-type, or give it as <actor_type>/%s", entity, entity)}
	}
	if eventType != "" && !strings.HasPrefix(eventType, "evt.") {
		if actorType == "" {
			return nil, &exitErr{exitUsage, fmt.Errorf("--event-type %s: give the full type, evt.<actor_type>.%s, or add --actor-type", eventType, eventType)}
		}
		eventType = "evt." + actorType + "." + eventType
	}
	if after > 0 && fromBeginning {
		return nil, &exitErr{exitUsage, errors.New("--after and --from-beginning contradict each other; give one")}
	}
	return &pb.WatchRequest{
		Tenant: f.tenant, Workspace: f.workspace, ActorType: actorType, EntityId: entity,
		EventType: eventType, AfterSequence: after, FromBeginning: fromBeginning,
	}, nil
}

// printWatchEvent prints one event on one line: text is
// "<sequence> <actor_type>/<entity_id> v<version> <type> <payload>", json one
// compact object.
func printWatchEvent(w io.Writer, format string, m *pb.WatchEvent) error {
	if rj := m.GetRejection(); rj != nil {
		// "<sequence> <actor_type>/<entity_id> rejected <type> <code> <message>"
		if format == "json" {
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			return enc.Encode(map[string]any{"sequence": m.GetSequence(), "rejection": recordJSON(&pb.HistoryRecord{Record: &pb.HistoryRecord_Rejection{Rejection: rj}})["rejection"]})
		}
		a := rj.GetAddress()
		_, err := fmt.Fprintf(w, "%d %s/%s rejected %s %s %s\n", m.GetSequence(), a.GetActorType(), a.GetEntityId(), rj.GetType(), rj.GetCode(), rj.GetMessage())
		return err
	}
	ev := m.GetEvent()
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return enc.Encode(map[string]any{"sequence": m.GetSequence(), "event": eventJSON(ev)})
	}
	a := ev.GetAddress()
	if sv := ev.GetSchemaVersion(); sv > 1 {
		// "<type>@v<schema>": only for schemas past the first, so the lines
		// of actors that never versioned their events read as before.
		_, err := fmt.Fprintf(w, "%d %s/%s v%d %s@v%d %s\n", m.GetSequence(), a.GetActorType(), a.GetEntityId(), ev.GetVersion(), ev.GetType(), sv, ev.GetPayload())
		return err
	}
	_, err := fmt.Fprintf(w, "%d %s/%s v%d %s %s\n", m.GetSequence(), a.GetActorType(), a.GetEntityId(), ev.GetVersion(), ev.GetType(), ev.GetPayload())
	return err
}
