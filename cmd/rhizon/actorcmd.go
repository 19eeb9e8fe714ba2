package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// actorRow is one actor type: the nodes that have each revision, the live
// nodes that do not have the type at all, and the revision the cluster
// switched it to (rhizon actor activate; empty: its base revision).
type actorRow struct {
	Type      string              `json:"type"`
	Revisions map[string][]string `json:"revisions"`
	Missing   []string            `json:"missing,omitempty"`
	Active    string              `json:"active,omitempty"`
	// Tenant owns a type deployed at run time ("*": every tenant's); empty
	// for a type loaded at start.
	Tenant string `json:"tenant,omitempty"`
}

func actorRows(st *pb.StatusResponse) []actorRow {
	byType := map[string]*actorRow{}
	var alive []string
	for _, n := range st.GetNodes() {
		if n.GetState() != "alive" && n.GetState() != "suspect" {
			continue
		}
		alive = append(alive, n.GetNodeId())
		for t, revs := range n.GetActorRevisions() { // comma-separated, base first
			r := byType[t]
			if r == nil {
				r = &actorRow{Type: t, Revisions: map[string][]string{}, Active: st.GetActiveRevisions()[t], Tenant: st.GetDeployedOwners()[t]}
				byType[t] = r
			}
			for _, rev := range strings.Split(revs, ",") {
				r.Revisions[rev] = append(r.Revisions[rev], n.GetNodeId())
			}
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
		Short: "List the actor types, their revisions and the nodes that have them",
		Long: "List every actor type the live nodes have (built-in and WebAssembly, see --wasm-actor), each\n" +
			"revision with the nodes that have it, the live nodes without the type, and the revision the\n" +
			"cluster runs (active: switched to with rhizon actor activate; otherwise the base revision),\n" +
			"and the tenant owning a type deployed with rhizon actor deploy (*: every tenant's; a tenant\n" +
			"token sees its own and those). A deployed type has no base revision: it runs once activated.\n" +
			"Every node should have every type: a node missing one refuses its commands differently.",
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
			fmt.Fprintln(tw, "TYPE\tREVISION\tTENANT\tNODES\t")
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
					mark := ""
					if rev == r.Active {
						mark = "active"
					}
					tenant := r.Tenant
					if tenant == "" {
						tenant = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Type, shown, tenant, nodes, mark)
				}
			}
			return tw.Flush()
		},
	}
	f.register(c)
	return c
}
