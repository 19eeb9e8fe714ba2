package main

import (
	"fmt"

	"github.com/spf13/cobra"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/gateway"
)

func listCmd() *cobra.Command {
	f := &clientFlags{}
	var prefix, pageToken string
	var limit uint32
	var where []string
	var all bool
	c := &cobra.Command{
		Use:   "list <document_type>",
		Short: "List a document type's documents, sorted by id (or by an indexed field with --where)",
		Long: "List the documents of kv or of a type declared with --document-types in the token's workspace,\n" +
			"sorted by entity id, one page at a time, with the count of all matching documents. Every shard is\n" +
			"read through its leader after a read barrier (each at its own applied index).\n\n" +
			"--where FIELD=VALUE, FIELD>=VALUE, FIELD>VALUE, FIELD<=VALUE, FIELD<VALUE uses the field's index\n" +
			"(declared as --document-types user:email,age); the order is then (value, id). VALUE is JSON when it\n" +
			"parses as a JSON scalar (30, true, null, \"30\"), else a string. Conditions name one field; two of\n" +
			"them bound a range: --where 'age>=30' --where 'age<40'.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			req := &pb.ListRequest{Tenant: f.tenant, Workspace: f.workspace, ActorType: args[0], Prefix: prefix, PageToken: pageToken, Limit: limit}
			for _, w := range where {
				pw, err := gateway.ParseWhere(w)
				if err != nil {
					return &exitErr{exitUsage, err}
				}
				req.Where = append(req.Where, pw)
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			w := c.OutOrStdout()
			var items []any
			for {
				resp, err := cl.List(ctx, req)
				if err != nil {
					return f.callErr(err)
				}
				if f.output == "json" && !all {
					for _, it := range resp.GetItems() {
						items = append(items, listItemJSON(it))
					}
					return writeJSON(w, map[string]any{
						"items": nonNil(items), "next_page_token": resp.GetNextPageToken(), "count": resp.GetCount(),
						"applied_indexes": resp.GetAppliedIndexes(),
					})
				}
				for _, it := range resp.GetItems() {
					if f.output == "json" {
						items = append(items, listItemJSON(it))
						continue
					}
					fmt.Fprintf(w, "%s\tv%d\t%s\n", it.GetId(), it.GetVersion(), it.GetState())
				}
				if !all || resp.GetNextPageToken() == "" {
					if f.output == "json" {
						return writeJSON(w, map[string]any{"items": nonNil(items), "count": resp.GetCount()})
					}
					fmt.Fprintf(w, "count %d", resp.GetCount())
					if t := resp.GetNextPageToken(); t != "" {
						fmt.Fprintf(w, "  next page: --page-token %s", t)
					}
					fmt.Fprintln(w)
					return nil
				}
				req.PageToken = resp.GetNextPageToken()
			}
		},
	}
	f.register(c)
	fs := c.Flags()
	fs.StringVar(&prefix, "prefix", "", "only ids starting with this")
	fs.Uint32Var(&limit, "limit", 0, "documents per page (0: 100; at most 1000)")
	fs.StringVar(&pageToken, "page-token", "", "next_page_token of the previous page")
	fs.StringArrayVar(&where, "where", nil, "condition on an indexed field (repeatable): email=a@b, 'age>=30'")
	fs.BoolVar(&all, "all", false, "follow the page tokens to the end")
	return c
}

func listItemJSON(it *pb.ListItem) map[string]any {
	return map[string]any{"id": it.GetId(), "version": it.GetVersion(), "state": rawJSON(it.GetState()), "shard": it.GetShard()}
}

func nonNil(items []any) []any {
	if items == nil {
		return []any{}
	}
	return items
}
