package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/ingress"
)

func eventsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "events",
		Short: "Operate the RHIZON_EVENTS stream (token with role admin)",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(republishCmd())
	return c
}

func republishCmd() *cobra.Command {
	f := &clientFlags{}
	var shardID int64
	var fromArg, toArg string
	var page uint32
	c := &cobra.Command{
		Use:   "republish --shard N [--from POSITION] [--to POSITION]",
		Short: "Publish a shard's committed events again to RHIZON_EVENTS, from its history (token with role admin)",
		Long: "Publish a shard's committed events again to RHIZON_EVENTS, read from the shard leader's history, each\n" +
			"with the subject, body and message id (the event id) it had the first time: the stream is a projection\n" +
			"of the shards' histories, and this rebuilds it after a purge or loss (RHIZON_EVENTS is created again\n" +
			"when it is missing). POSITION is INDEX or INDEX.ORDINAL as `rhizon history` prints it (Event.index\n" +
			"and Event.ordinal); --from is inclusive (default: the start), --to inclusive (INDEX: all of that\n" +
			"index; default: the end). JetStream drops as duplicates the ids it still remembers (its duplicate\n" +
			"window, --nats-duplicate-window): those are counted, not stored twice.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !c.Flags().Changed("shard") || shardID < 0 || shardID > math.MaxUint32 {
				return &exitErr{exitUsage, errors.New("give the shard with --shard N (0 to the shard count - 1; `rhizon status` shows the count)")}
			}
			from, err := parsePosition("--from", fromArg, false)
			if err != nil {
				return err
			}
			req := &pb.RepublishEventsRequest{Shard: uint32(shardID), From: from, Limit: page}
			if toArg != "" {
				if req.To, err = parsePosition("--to", toArg, true); err != nil {
					return err
				}
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			var total uint64
			var last *pb.Position
			node := ""
			for {
				resp, err := cl.RepublishEvents(ctx, req)
				if err != nil {
					if total > 0 {
						err = fmt.Errorf("%w (after %d events republished; rerun with --from %s to go on)", err, total, fmtPos(req.From))
					}
					return f.callErr(err)
				}
				total += resp.GetRepublished()
				if resp.GetLast() != nil {
					last = resp.GetLast()
				}
				node = resp.GetNodeId()
				if resp.GetDone() {
					break
				}
				req.From = resp.GetNext()
			}
			w := c.OutOrStdout()
			if f.output == "json" {
				out := map[string]any{"shard": req.Shard, "republished": total, "node_id": node}
				if last != nil {
					out["last_index"], out["last_ordinal"] = last.GetIndex(), last.GetOrdinal()
				}
				return writeJSON(w, out)
			}
			if last == nil {
				fmt.Fprintf(w, "shard %d: no events in the range; nothing republished\n", req.Shard)
				return nil
			}
			fmt.Fprintf(w, "shard %d: republished %d events, the last at %s (by node %s)\n", req.Shard, total, fmtPos(last), node)
			return nil
		},
	}
	f.registerUnscoped(c)
	c.Flags().DurationVar(&f.timeout, "timeout", 10*time.Minute, "deadline for the whole republish (each call scans the shard's history)")
	c.Flags().Int64Var(&shardID, "shard", -1, "the shard to republish (required)")
	c.Flags().StringVar(&fromArg, "from", "", "first position, inclusive: INDEX or INDEX.ORDINAL (default: the start of the history)")
	c.Flags().StringVar(&toArg, "to", "", "last position, inclusive: INDEX (all of it) or INDEX.ORDINAL (default: the end)")
	c.Flags().Uint32Var(&page, "page", 0, "events per call (0: the server's maximum, 10000)")
	return c
}

// parsePosition reads INDEX or INDEX.ORDINAL; a bare INDEX is its first
// ordinal, or with last its final one.
func parsePosition(flag, s string, last bool) (*pb.Position, error) {
	if s == "" {
		return nil, nil
	}
	is, ords, hasOrd := strings.Cut(s, ".")
	idx, err := strconv.ParseUint(is, 10, 64)
	if err != nil {
		return nil, &exitErr{exitUsage, fmt.Errorf("%s %q: a position is INDEX or INDEX.ORDINAL, e.g. 120 or 120.2 (as `rhizon history` prints it)", flag, s)}
	}
	p := &pb.Position{Index: idx}
	switch {
	case hasOrd:
		ord, err := strconv.ParseUint(ords, 10, 32)
		if err != nil {
			return nil, &exitErr{exitUsage, fmt.Errorf("%s %q: the ordinal after the dot is a number below 2^32, e.g. 120.2", flag, s)}
		}
		p.Ordinal = uint32(ord)
	case last:
		p.Ordinal = math.MaxUint32
	}
	return p, nil
}

func fmtPos(p *pb.Position) string {
	if p == nil {
		return "0"
	}
	return fmt.Sprintf("%d.%d", p.GetIndex(), p.GetOrdinal())
}

// republisher adapts the ingress manager to cluster.EventsRepublisher.
type republisher struct{ m *ingress.Manager }

func (r republisher) RepublishRange(ctx context.Context, shard uint32, from, to engine.Position, limit int) (int, engine.Position, engine.Position, bool, error) {
	out, err := r.m.RepublishRange(ctx, shard, from, to, limit)
	if errors.Is(err, ingress.ErrShardNotHere) {
		err = fmt.Errorf("%w: %v", cluster.ErrNotLeading, err)
	}
	return out.Count, out.Last, out.Next, out.Done, err
}
