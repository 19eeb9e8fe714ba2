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
	"time"

	"github.com/spf13/cobra"

	"github.com/rhizon/rhizon/bench"
	"github.com/rhizon/rhizon/bench/peer"
)

// benchPeerCmd runs a peer cluster for `rhizon bench` in a process of its
// own, so that the servers' CPU is not counted in the load generator's and
// they share the machine the way Rhizon's node processes do. Hidden: it is
// plumbing, though usable by hand to bench a peer from another machine
// with `rhizon bench --target etcd --peer-addrs ...`.
func benchPeerCmd() *cobra.Command {
	var (
		kind, dir string
		stdinEOF  bool
	)
	c := &cobra.Command{
		Use:    "bench-peer",
		Short:  "Run a 3-server peer cluster (etcd, jetstream-kv, jetstream-kv-sync) for rhizon bench",
		Hidden: true,
		Long: `Start three servers of the given kind on free loopback ports, print one
JSON line {"kind":...,"urls":[...],"pid":...} on stdout once they take writes,
and run until SIGINT/SIGTERM (or, with --stop-on-stdin-eof, until stdin closes).
Without --dir the data lives in a temporary directory removed on exit.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runBenchPeer(c, kind, dir, stdinEOF)
		},
	}
	fs := c.Flags()
	fs.StringVar(&kind, "kind", "", "peer cluster: "+strings.Join(peer.Kinds, ", "))
	fs.StringVar(&dir, "dir", "", "data directory (created if missing; default: a temporary one, removed on exit)")
	fs.BoolVar(&stdinEOF, "stop-on-stdin-eof", false, "stop when stdin closes (the parent's end of a pipe: it stops with the parent)")
	return c
}

func runBenchPeer(c *cobra.Command, kind, dir string, stdinEOF bool) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "rhizon-bench-peer-")
		if err != nil {
			return &exitErr{exitError, err}
		}
		defer func() { _ = os.RemoveAll(d) }()
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return &exitErr{exitError, err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if stdinEOF {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	startCtx, cancelStart := context.WithTimeout(ctx, bench.DefaultPeerStartTimeout)
	defer cancelStart()
	cl, err := peer.Start(startCtx, kind, peer.Config{Dir: dir, Log: c.ErrOrStderr()})
	if err != nil {
		return &exitErr{exitError, err}
	}
	line, err := json.Marshal(bench.PeerInfo{Kind: cl.Kind, URLs: cl.URLs, PID: os.Getpid()})
	if err == nil {
		_, err = fmt.Fprintf(c.OutOrStdout(), "%s\n", line)
	}
	if err == nil {
		<-ctx.Done()
	}
	began := time.Now()
	cerr := cl.Close()
	fmt.Fprintf(c.ErrOrStderr(), "bench-peer: %s stopped in %v\n", kind, time.Since(began).Round(time.Millisecond))
	if err := errors.Join(err, cerr); err != nil {
		return &exitErr{exitError, fmt.Errorf("bench-peer: %w", err)}
	}
	return nil
}
