package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

func actorCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "actor",
		Short: "The actor types the cluster's nodes run",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(actorListCmd())
	return c
}

// actorRow is one actor type: the nodes running it at each revision, and
// the live nodes that do not run it at all.
type actorRow struct {
	Type      string              `json:"type"`
	Revisions map[string][]string `json:"revisions"`
	Missing   []string            `json:"missing,omitempty"`
}

func actorRows(st *pb.StatusResponse) []actorRow {
	byType := map[string]*actorRow{}
	var alive []string
	for _, n := range st.GetNodes() {
		if n.GetState() != "alive" && n.GetState() != "suspect" {
			continue
		}
		alive = append(alive, n.GetNodeId())
		for t, rev := range n.GetActors() {
			r := byType[t]
			if r == nil {
				r = &actorRow{Type: t, Revisions: map[string][]string{}}
				byType[t] = r
			}
			r.Revisions[rev] = append(r.Revisions[rev], n.GetNodeId())
		}
	}
	rows := make([]actorRow, 0, len(byType))
	for _, r := range byType {
		for rev := range r.Revisions {
			slices.Sort(r.Revisions[rev])
		}
		for _, id := range alive {
			if !runs(r, id) {
				r.Missing = append(r.Missing, id)
			}
		}
		slices.Sort(r.Missing)
		rows = append(rows, *r)
	}
	slices.SortFunc(rows, func(a, b actorRow) int { return strings.Compare(a.Type, b.Type) })
	return rows
}

func runs(r *actorRow, node string) bool {
	for _, ids := range r.Revisions {
		if slices.Contains(ids, node) {
			return true
		}
	}
	return false
}

func actorListCmd() *cobra.Command {
	f := &clientFlags{}
	c := &cobra.Command{
		Use:   "list",
		Short: "List the actor types, their revisions and the nodes that run them",
		Long: "List every actor type the live nodes run (built-in and WebAssembly, see --wasm-actor), the\n" +
			"revision each node runs it at, and the live nodes that do not have it. Every node must run the\n" +
			"same types at the same revisions: a type with two revisions or missing nodes is a deployment\n" +
			"to finish before sending it commands.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			st, err := cl.Status(ctx)
			if err != nil {
				return f.callErr(err)
			}
			rows := actorRows(st)
			w := c.OutOrStdout()
			if f.output == "json" {
				return writeJSON(w, rows)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TYPE\tREVISION\tNODES")
			for _, r := range rows {
				revs := make([]string, 0, len(r.Revisions))
				for rev := range r.Revisions {
					revs = append(revs, rev)
				}
				slices.Sort(revs)
				for _, rev := range revs {
					shown := rev
					if shown == "" {
						shown = "-"
					}
					nodes := strings.Join(r.Revisions[rev], ",")
					if len(r.Missing) > 0 {
						nodes += " (not on " + strings.Join(r.Missing, ",") + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Type, shown, nodes)
				}
			}
			return tw.Flush()
		},
	}
	f.register(c)
	return c
}
