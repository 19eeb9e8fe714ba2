package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/gateway"
)

func deadLettersCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "dead-letters",
		Short: "List and redrive the RHIZON_DEAD stream's dead letters (token with role admin)",
		Long: "List and redrive the dead letters of the RHIZON_DEAD stream: ingress messages that could not apply.\n" +
			"A `rejected` letter (malformed, unauthenticated, invalid) cannot apply as it is: fix it and publish it\n" +
			"again. A `poison` one (valid, but it kept failing on the node, e.g. an actor type not deployed yet) can\n" +
			"be redriven once the cause is fixed. Needs a token with role admin and a node with JetStream.",
		Args: cobra.NoArgs,
	}
	c.AddCommand(deadLettersListCmd(), deadLettersRedriveCmd())
	return c
}

// jsonFlag registers --json, the shorthand for -o json these commands
// document: one JSON object a line.
func jsonFlag(c *cobra.Command, f *clientFlags) *bool {
	on := c.Flags().Bool("json", false, "one JSON object a line (same as -o json)")
	c.PreRun = func(*cobra.Command, []string) {
		if *on {
			f.output = "json"
		}
	}
	return on
}

func deadLettersListCmd() *cobra.Command {
	f := &clientFlags{}
	var after uint64
	var limit uint32
	var all bool
	c := &cobra.Command{
		Use:   "list [--after SEQ] [--limit N] [--all] [--json]",
		Short: "List dead letters, oldest first (token with role admin)",
		Long: "List the dead letters after sequence --after, oldest first, --limit a page: sequence, time (UTC), shard,\n" +
			"kind (rejected or poison), whether it can be redriven, the command's type, tenant/workspace and entity\n" +
			"when the body is a command, and why it was dead-lettered. When the page is full it ends with\n" +
			"`more: --after SEQ`, the flag that lists the next page (--all follows the pages to the end).\n" +
			"--json prints each letter as one JSON object a line (the fields of GET /v1/admin/dead_letters:\n" +
			"body, digest, headers, command, not_redrivable, ...), and `more: --after SEQ` on stderr.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if limit < 1 || limit > gateway.MaxDeadLetterPage {
				return &exitErr{exitUsage, fmt.Errorf("--limit %d: give 1 to %d letters a page; --all follows the pages", limit, gateway.MaxDeadLetterPage)}
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			w := c.OutOrStdout()
			var tw *tabwriter.Writer
			if f.output != "json" {
				tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tSHARD\tKIND\tREDRIVE\tCOMMAND\tTENANT\tENTITY\tREASON")
			}
			req := &pb.ListDeadLettersRequest{After: after, Limit: limit}
			n := 0
			for {
				resp, err := cl.ListDeadLetters(ctx, req)
				if err != nil {
					if n > 0 {
						err = fmt.Errorf("%w (after %d letters listed; rerun with --after %d to go on)", err, n, req.After)
					}
					return f.callErr(err)
				}
				for _, d := range resp.GetDeadLetters() {
					if tw == nil {
						if err := writeJSONLine(w, gateway.DeadLetterJSON(d)); err != nil {
							return err
						}
					} else {
						printDeadLetter(tw, d)
					}
					n++
				}
				// next is the last sequence of a full page (0: the end): the
				// `after` of the page that follows.
				req.After = resp.GetNext()
				if req.After == 0 || !all {
					break
				}
			}
			if tw != nil {
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			switch {
			case req.After != 0 && tw == nil:
				fmt.Fprintf(c.ErrOrStderr(), "more: --after %d\n", req.After)
			case req.After != 0:
				fmt.Fprintf(w, "more: --after %d\n", req.After)
			case n == 0 && tw != nil:
				fmt.Fprintf(w, "no dead letters after sequence %d\n", after)
			}
			return nil
		},
	}
	f.registerAdmin(c)
	jsonFlag(c, f)
	c.Flags().Uint64Var(&after, "after", 0, "list the letters after sequence `SEQ` (a full page ends with the --after of the next)")
	c.Flags().Uint32Var(&limit, "limit", gateway.DefaultDeadLetterPage, fmt.Sprintf("letters a page, 1 to %d", gateway.MaxDeadLetterPage))
	c.Flags().BoolVar(&all, "all", false, "follow the pages to the end")
	return c
}

// printDeadLetter writes one table row. Everything but the sequence, time
// and shard comes from a producer's message: cell keeps a control sequence
// in it from reaching the terminal and a tab or newline from breaking the
// table.
func printDeadLetter(tw io.Writer, d *pb.DeadLetter) {
	redrive := "no"
	if d.GetRedrivable() {
		redrive = "yes"
	}
	typ, scope, entity := "", "", ""
	if cmd := d.GetCommand(); cmd != nil {
		a := cmd.GetAddress()
		typ, scope, entity = cmd.GetType(), a.GetTenant()+"/"+a.GetWorkspace(), a.GetActorType()+"/"+a.GetEntityId()
	}
	at := time.UnixMilli(d.GetAt()).UTC().Format(time.RFC3339)
	fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", d.GetSequence(), at, d.GetShard(), cell(d.GetKind()), redrive,
		cell(typ), cell(scope), cell(entity), cell(d.GetReason()))
}

func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsGraphic(r) && r != '\t' {
			return r
		}
		return '?'
	}, s)
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func deadLettersRedriveCmd() *cobra.Command {
	f := &clientFlags{}
	c := &cobra.Command{
		Use:   "redrive SEQ [SEQ...]",
		Short: "Publish poison dead letters' commands again to the ingress (token with role admin)",
		Long: "Publish each poison dead letter's command again to its shard's ingress subject, signed by the node,\n" +
			"with the identity the ingress had authenticated when it dead-lettered it: that identity is not asked\n" +
			"again (a producer token revoked since still counts), so redrive only what you mean to. The command\n" +
			"keeps its id and idempotency key, so it applies at most once; redriving a letter twice within\n" +
			"JetStream's duplicate window stores it once. SEQ is the SEQ column of `rhizon dead-letters list`.\n" +
			"Prints per sequence where the command was stored, or the node's answer on stderr: NOT_FOUND (no such\n" +
			"letter) or FAILED_PRECONDITION (it cannot be redriven, and why: a rejected letter, or one without a\n" +
			"redrive record), and goes on with the next. Exit 0 when every one was redriven, 1 otherwise.\n" +
			"--json prints one object a line per sequence (`redriven`, and `code` and `error` when not).",
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			seqs := make([]uint64, len(args))
			for i, a := range args {
				n, err := strconv.ParseUint(a, 10, 64)
				if err != nil || n == 0 {
					return &exitErr{exitUsage, fmt.Errorf("SEQ %q: a dead letter's sequence is a whole number from 1 (the SEQ column of `rhizon dead-letters list`)", a)}
				}
				seqs[i] = n
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			w, ew := c.OutOrStdout(), c.ErrOrStderr()
			var failed []string
			for i, seq := range seqs {
				resp, err := cl.RedriveDeadLetter(ctx, &pb.RedriveDeadLetterRequest{Sequence: seq})
				code := status.Code(err)
				if err != nil && code != codes.NotFound && code != codes.FailedPrecondition && code != codes.InvalidArgument {
					// Not an answer about this letter (no JetStream, not an
					// admin, the node unreachable): the rest would fail alike.
					if i > 0 {
						err = fmt.Errorf("%w (stopped at sequence %d: the %d before it were tried, %d of them not redriven)", err, seq, i, len(failed))
					}
					return f.callErr(err)
				}
				if err != nil {
					msg := status.Convert(err).Message()
					if code == codes.NotFound {
						msg += " (from the shell: `rhizon dead-letters list`)"
					}
					failed = append(failed, fmt.Sprintf("%d (%s)", seq, codeName(code)))
					if f.output == "json" {
						if err := writeJSONLine(w, map[string]any{"sequence": seq, "redriven": false, "code": codeName(code), "error": msg}); err != nil {
							return err
						}
						continue
					}
					fmt.Fprintf(ew, "%d: not redriven: %s: %s\n", seq, codeName(code), msg)
					continue
				}
				if f.output == "json" {
					if err := writeJSONLine(w, map[string]any{"sequence": seq, "redriven": true, "stream": resp.GetStream(),
						"stream_sequence": resp.GetSequence(), "shard": resp.GetShard(), "duplicate": resp.GetDuplicate()}); err != nil {
						return err
					}
					continue
				}
				if resp.GetDuplicate() {
					fmt.Fprintf(w, "%d: already redriven (duplicate, nothing new stored): %s sequence %d, shard %d\n", seq, resp.GetStream(), resp.GetSequence(), resp.GetShard())
				} else {
					fmt.Fprintf(w, "%d: redriven: stored as %s sequence %d, shard %d\n", seq, resp.GetStream(), resp.GetSequence(), resp.GetShard())
				}
			}
			if len(failed) > 0 {
				return &exitErr{exitError, fmt.Errorf("%d of %d dead letters not redriven: %s", len(failed), len(seqs), strings.Join(failed, ", "))}
			}
			return nil
		},
	}
	f.registerAdmin(c)
	jsonFlag(c, f)
	return c
}

// codeName is a gRPC code as the API documents it (NOT_FOUND).
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
