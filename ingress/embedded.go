// Package ingress connects Rhizon to NATS JetStream. This file runs the
// embedded NATS server a node starts when no external NATS URL is configured,
// so one binary is a whole deployment.
package ingress

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the embedded server.
type EmbeddedConfig struct {
	ServerName string
	// Addr is host:port for clients; port 0 picks a free one.
	Addr     string
	StoreDir string
}

// StartEmbedded starts a NATS server with JetStream on file storage. Every
// JetStream write is synced to disk before it is acknowledged (SyncAlways):
// NATS's default syncs only every two minutes, so an acknowledged message
// could be lost on power failure (Jepsen, NATS 2.12.1).
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ingress: nats address %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("ingress: nats port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: true,
		NoSigs:     true,
		NoLog:      true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("ingress: embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("ingress: embedded nats did not start on %s within 10s", cfg.Addr)
	}
	return s, nil
}
