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
	"github.com/rhizon/rhizon/bench/peer/peerserver"
)

// benchPeerFlags are `rhizon bench-peer`'s flags.
type benchPeerFlags struct {
	kind, dir, layout, rmDir string
	server                   int
	stdinEOF                 bool
}

// benchPeerCmd runs a peer server (or a whole peer cluster) for `rhizon
// bench` in a process of its own, so that the servers' CPU is not counted
// in the load generator's and they share the machine the way Rhizon's
// node processes do. Hidden: it is plumbing, though usable by hand to
// bench a peer from another machine with `rhizon bench --target etcd
// --peer-addrs ...`.
func benchPeerCmd() *cobra.Command {
	var f benchPeerFlags
	c := &cobra.Command{
		Use:    "bench-peer",
		Short:  "Run a peer server or 3-server cluster (etcd, jetstream-kv, jetstream-kv-sync) for rhizon bench",
		Hidden: true,
		Long: `Without --server: start three servers of the given kind in this process on
free loopback ports. With --server I --layout JSON: start only server I
(0-2) of the cluster the layout describes (its kind and ports, as rhizon
bench chooses them); the other two run in processes of their own.
Either way, print one JSON line {"kind":...,"urls":[...],"pid":...} on
stdout once the servers take writes, and run until SIGINT/SIGTERM (or,
with --stop-on-stdin-eof, until stdin closes).
Without --dir the data lives in a temporary directory removed on exit.
--remove-on-exit DIR removes DIR (which may hold --dir and the log) on
exit once the servers have started: the parent that made it may be gone.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runBenchPeer(c, f)
		},
	}
	fs := c.Flags()
	fs.StringVar(&f.kind, "kind", "", "peer cluster: "+strings.Join(peer.Kinds, ", ")+" (with --layout: the layout's)")
	fs.StringVar(&f.dir, "dir", "", "data directory (created if missing; default: a temporary one, removed on exit)")
	fs.IntVar(&f.server, "server", -1, "run only this server (0-2) of the cluster --layout describes")
	fs.StringVar(&f.layout, "layout", "", "the cluster's kind and ports as JSON, for --server")
	fs.BoolVar(&f.stdinEOF, "stop-on-stdin-eof", false, "stop when stdin closes (the parent's end of a pipe: it stops with the parent)")
	fs.StringVar(&f.rmDir, "remove-on-exit", "", "directory to remove on exit once started (a failed start leaves it to the parent, which reads the log in it)")
	return c
}

// closer is what runBenchPeer runs: a whole cluster or one server.
type closer interface{ Close() error }

func runBenchPeer(c *cobra.Command, f benchPeerFlags) error {
	var layout peer.Layout
	if (f.server >= 0) != (f.layout != "") {
		return &exitErr{exitUsage, errors.New("bench-peer: --server and --layout go together")}
	}
	if f.layout != "" {
		if err := json.Unmarshal([]byte(f.layout), &layout); err != nil {
			return &exitErr{exitUsage, fmt.Errorf("bench-peer: --layout: %w", err)}
		}
		if f.kind != "" && f.kind != layout.Kind {
			return &exitErr{exitUsage, fmt.Errorf("bench-peer: --kind %s but the layout is of %s", f.kind, layout.Kind)}
		}
		f.kind = layout.Kind
	}
	dir := f.dir
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
	if f.stdinEOF {
		// A pipe rather than Linux's Pdeathsig: that fires when the thread
		// that started the child exits, which a Go parent does not control.
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
	cfg := peerserver.Config{Dir: dir, Log: c.ErrOrStderr()}
	var (
		running closer
		urls    []string
		err     error
	)
	if f.server >= 0 {
		var s *peerserver.Server
		if s, err = peerserver.StartServer(startCtx, layout, f.server, cfg); err == nil {
			running, urls = s, []string{s.URL}
		}
	} else {
		var cl *peerserver.Cluster
		if cl, err = peerserver.Start(startCtx, f.kind, cfg); err == nil {
			running, urls = cl, cl.URLs
		}
	}
	if err != nil {
		return &exitErr{exitError, err}
	}
	if f.rmDir != "" {
		defer func() { _ = os.RemoveAll(f.rmDir) }()
	}
	line, err := json.Marshal(bench.PeerInfo{Kind: f.kind, URLs: urls, PID: os.Getpid()})
	if err == nil {
		_, err = fmt.Fprintf(c.OutOrStdout(), "%s\n", line)
	}
	if err == nil {
		<-ctx.Done()
	}
	began := time.Now()
	cerr := running.Close()
	fmt.Fprintf(c.ErrOrStderr(), "bench-peer: %s stopped in %v\n", f.kind, time.Since(began).Round(time.Millisecond))
	if err := errors.Join(err, cerr); err != nil {
		return &exitErr{exitError, fmt.Errorf("bench-peer: %w", err)}
	}
	return nil
}
