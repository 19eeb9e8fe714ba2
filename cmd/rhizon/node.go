package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/telemetry"
	"github.com/rhizon/rhizon/shard"
)

type nodeFlags struct {
	nodeID       string
	dataDir      string
	shards       uint32
	grpcAddr     string
	httpAddr     string
	tokenFile    string
	natsAddr     string
	natsURL      string
	otlpEndpoint string
	logLevel     string
	config       string
	devTenant    string
	snapshotAt   uint64
}

func (f *nodeFlags) register(c *cobra.Command, dev bool) {
	fs := c.Flags()
	nodeID, dataDir, shards, token := "", "data", cluster.DefaultShards, ""
	grpcAddr, httpAddr, natsAddr := ":7400", ":7401", ":4222"
	if dev {
		nodeID, dataDir, shards, token = "dev", "./data", 8, "./data/dev-token.json"
		grpcAddr, httpAddr, natsAddr = "127.0.0.1:7400", "127.0.0.1:7401", "127.0.0.1:4222"
	}
	fs.StringVar(&f.nodeID, "node-id", nodeID, "this node's id (stable across restarts)")
	fs.StringVar(&f.dataDir, "data-dir", dataDir, "directory for all of the node's data")
	fs.Uint32Var(&f.shards, "shards", uint32(shards), "shard count, fixed when the data directory is created")
	fs.StringVar(&f.grpcAddr, "grpc-addr", grpcAddr, "gRPC gateway listen address (port 0 picks a free port)")
	fs.StringVar(&f.httpAddr, "http-addr", httpAddr, "HTTP/JSON gateway, /metrics and health listen address")
	fs.StringVar(&f.tokenFile, "token-file", token, "bearer token file (JSON); dev creates one when missing")
	fs.StringVar(&f.natsAddr, "nats-addr", natsAddr, `embedded NATS listen address; "off" disables it`)
	fs.StringVar(&f.natsURL, "nats-url", "", "external NATS URL; when set no embedded server runs")
	fs.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "OTLP/gRPC endpoint (host:port) for traces")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.config, "config", "", "YAML file with flag values (flags and RHIZON_* variables win)")
	fs.Uint64Var(&f.snapshotAt, "snapshot-threshold", 8192, "raft entries between snapshots of a shard")
	if dev {
		fs.StringVar(&f.devTenant, "tenant", "dev", "tenant of the dev token")
	}
}

func devCmd() *cobra.Command {
	f := &nodeFlags{}
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run a single development node: several shards, embedded NATS, a dev token",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := applyConfig(c.Flags()); err != nil {
				return &exitErr{exitUsage, err}
			}
			return runNode(c.Context(), c.OutOrStdout(), f, true)
		},
	}
	f.register(c, true)
	return c
}

func nodeCmd() *cobra.Command {
	f := &nodeFlags{}
	c := &cobra.Command{
		Use:   "node",
		Short: "Run a node",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := applyConfig(c.Flags()); err != nil {
				return &exitErr{exitUsage, err}
			}
			if f.nodeID == "" {
				return &exitErr{exitUsage, errors.New("--node-id is required (or RHIZON_NODE_ID)")}
			}
			if f.tokenFile == "" {
				return &exitErr{exitUsage, errors.New("--token-file is required (or RHIZON_TOKEN_FILE)")}
			}
			return runNode(c.Context(), c.OutOrStdout(), f, false)
		},
	}
	f.register(c, false)
	return c
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func runNode(ctx context.Context, out io.Writer, f *nodeFlags, dev bool) (err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := newLogger(f.logLevel)
	if err != nil {
		return &exitErr{exitUsage, err}
	}
	slog.SetDefault(log)
	if err := os.MkdirAll(f.dataDir, 0o755); err != nil {
		return err
	}

	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "rhizon", NodeID: f.nodeID, OTLPEndpoint: f.otlpEndpoint})
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()

	var devToken string
	if dev {
		if _, statErr := os.Stat(f.tokenFile); errors.Is(statErr, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(f.tokenFile), 0o755); err != nil {
				return err
			}
			if devToken, err = gateway.GenerateDevTokenFile(f.tokenFile, f.devTenant); err != nil {
				return err
			}
		} else if devToken, err = firstToken(f.tokenFile); err != nil {
			return err
		}
	}
	auth, err := gateway.LoadTokenFile(f.tokenFile)
	if err != nil {
		return &exitErr{exitUsage, err}
	}

	var nats *natsserver.Server
	natsURL := f.natsURL
	if natsURL == "" && f.natsAddr != "off" {
		nats, err = ingress.StartEmbedded(ingress.EmbeddedConfig{
			ServerName: "rhizon-" + f.nodeID, Addr: f.natsAddr, StoreDir: filepath.Join(f.dataDir, "nats"),
		})
		if err != nil {
			return err
		}
		defer nats.Shutdown()
		natsURL = nats.ClientURL()
	}

	node, err := cluster.Open(cluster.Config{
		NodeID: f.nodeID, DataDir: f.dataDir, Shards: f.shards, Registry: builtin.Registry(),
		Logger: log, Version: version,
		ShardTemplate: shard.Config{SnapshotThreshold: f.snapshotAt},
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := node.Close(); cerr != nil {
			log.Error("close node", "err", cerr)
		}
	}()

	gw, err := gateway.New(gateway.Config{Backend: node, Auth: auth, Logger: log, NodeID: f.nodeID, Version: version})
	if err != nil {
		return err
	}
	gs := grpc.NewServer(gateway.ServerOptions()...)
	gw.RegisterGRPC(gs)
	gl, err := net.Listen("tcp", f.grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr %s: %w", f.grpcAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", tel.MetricsHandler())
	mux.Handle("/", gw.HTTPHandler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	hl, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("--http-addr %s: %w", f.httpAddr, err)
	}
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(gl) }()
	go func() { errc <- hs.Serve(hl) }()
	hctx, hcancel := context.WithCancel(ctx)
	go gw.WatchHealth(hctx, 2*time.Second)
	defer func() {
		hcancel()
		gw.Shutdown() // NOT_SERVING first, so balancers stop before the drain
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()

	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = node.WaitReady(rctx)
	cancel()
	if err != nil {
		return err
	}
	printBanner(out, f, dev, gl.Addr().String(), hl.Addr().String(), natsURL, devToken)
	log.Info("node ready", "node", f.nodeID, "grpc", gl.Addr().String(), "http", hl.Addr().String(), "shards", f.shards)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case err := <-errc:
		return err
	}
}

func printBanner(out io.Writer, f *nodeFlags, dev bool, grpcAddr, httpAddr, natsURL, token string) {
	mode := "node"
	if dev {
		mode = "dev"
	}
	fmt.Fprintf(out, "rhizon %s %s is ready\n", mode, version)
	fmt.Fprintf(out, "  node:      %s (%d shards)\n", f.nodeID, f.shards)
	fmt.Fprintf(out, "  data:      %s\n", f.dataDir)
	fmt.Fprintf(out, "  gRPC:      %s\n", grpcAddr)
	fmt.Fprintf(out, "  HTTP/JSON: http://%s  (metrics at /metrics, health at /healthz)\n", httpAddr)
	if natsURL != "" {
		fmt.Fprintf(out, "  NATS:      %s (JetStream)\n", natsURL)
	}
	fmt.Fprintf(out, "  tokens:    %s\n", f.tokenFile)
	if token != "" {
		fmt.Fprintf(out, "  token:     %s\n", token)
		fmt.Fprintf(out, "\ntry:\n  export RHIZON_ADDR=%s RHIZON_TOKEN=%s\n", grpcAddr, token)
		fmt.Fprintf(out, "  rhizon send counter/c1 cmd.counter.add '{\"amount\":5}'\n  rhizon get counter/c1\n")
	}
}

// firstToken reads the first token of a token file (dev prints it).
func firstToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var tf struct {
		Tokens []struct {
			Token string `json:"token"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal(b, &tf); err != nil || len(tf.Tokens) == 0 {
		return "", fmt.Errorf("token file %s has no tokens (delete it and dev creates a new one)", path)
	}
	return strings.TrimSpace(tf.Tokens[0].Token), nil
}
