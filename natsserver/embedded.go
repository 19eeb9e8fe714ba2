// Package natsserver runs the embedded NATS server (JetStream, clustered
// with the other nodes' embedded servers) a node starts when no external
// NATS URL is configured, with its accounts and client authentication. It
// is the only package that links nats-server outside tests: producers,
// consumers and the bench speak to it through api/stream's names.
package natsserver

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rhizon/rhizon/api/stream"
)

// Server is the embedded server: callers hold it without importing
// nats-server themselves.
type Server = server.Server

// EmbeddedConfig configures the embedded server.
type EmbeddedConfig struct {
	ServerName string
	// Addr is host:port for clients; port 0 picks a free one.
	Addr     string
	StoreDir string
	// ClusterAddr, when set, is host:port the server listens on for routes
	// from the other nodes' servers; with it the servers form one NATS
	// cluster and JetStream replicates streams across them.
	ClusterAddr string
	// Routes are host:port of (some of) the other nodes' ClusterAddr; NATS
	// learns the rest of the cluster from them.
	Routes []string
	// ClusterSecret authenticates routes: only servers that know it join.
	// With it, clients authenticate too, and NATS accounts separate them
	// (see accounts.go): the nodes and operators with the credentials
	// derived from it (NodeCredentials) may do anything in the node
	// account; a producer authenticates with one of ProducerTokens and may
	// only publish commands, in an account of its own. Nobody else may
	// connect. Empty: no accounts, every client may do anything (tests).
	ClusterSecret string
	// ProducerTokens are the bearer tokens that may publish commands (the
	// token file's); each gets its own account (ProducerAccount).
	ProducerTokens []string
	// ProducerLimits bound each producer account.
	ProducerLimits ProducerLimits
	// TLS, when set, makes the client port and the routes TLS: the server
	// presents TLS.Certificates, and verifies the servers it routes to
	// against TLS.RootCAs (nil: the system's roots). The node's own
	// in-process connection needs none.
	TLS *tls.Config
	// Logger receives the server's notices, warnings and errors (none when
	// nil).
	Logger *slog.Logger
	// SyncInterval, when above zero, syncs JetStream's files that often
	// instead of after every write (SyncAlways, the default). The streams'
	// Raft logs are still written to the operating system at once (as read
	// in nats-server 2.15, not tested here), so a killed server should lose
	// nothing; a power loss or OS crash of a majority of a stream's servers
	// within the interval can lose acknowledged messages.
	// The ingress benchmark measured about 2-3x the commands per second with
	// 100 ms (bench/MEASUREMENTS.md).
	SyncInterval time.Duration
}

// tlsTimeout bounds a TLS handshake on the client port and the routes.
const tlsTimeout = 2 * time.Second

// MaxMessageBytes is the embedded server's message size limit.
const MaxMessageBytes = 4 << 20

// ClusterName is the NATS cluster the embedded servers form.
const ClusterName = "rhizon"

// StartEmbedded starts a NATS server with JetStream on file storage. Every
// JetStream write is synced to disk before it is acknowledged (SyncAlways,
// unless cfg.SyncInterval says otherwise): NATS's default syncs only every
// two minutes, so an acknowledged message could be lost on power failure
// (Jepsen, NATS 2.12.1). The setting is
// server-wide; a one-replica stream may opt out with JetStream's async
// persist mode (the ingress does so for RHIZON_EVENTS, a projection:
// ingress.EventsSyncAsync).
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	host, port, err := splitPort(cfg.Addr, "nats address")
	if err != nil {
		return nil, err
	}
	opts := &server.Options{}
	var auth *clientAuth
	if cfg.ClusterSecret != "" {
		var accounts []string
		auth, accounts = newClientAuth(cfg.ClusterSecret, cfg.ProducerTokens)
		cfg.ProducerLimits.setDefaults()
		if err := opts.ProcessConfigString(accountsConfig(accounts, cfg.ProducerLimits)); err != nil {
			return nil, fmt.Errorf("ingress: embedded nats accounts: %w", err)
		}
		opts.CustomClientAuthentication = auth
	}
	opts.ServerName = cfg.ServerName
	opts.Host, opts.Port = host, port
	opts.JetStream, opts.StoreDir, opts.SyncAlways = true, cfg.StoreDir, cfg.SyncInterval <= 0
	if cfg.SyncInterval > 0 {
		opts.SyncInterval = cfg.SyncInterval
	}
	opts.NoSigs, opts.NoLog = true, true
	// A command may carry a 1 MiB payload; with its envelope (and an event
	// with the same payload) it exceeds NATS's 1 MB default.
	opts.MaxPayload = MaxMessageBytes
	if cfg.TLS != nil {
		opts.TLSConfig, opts.TLSTimeout = cfg.TLS.Clone(), tlsTimeout.Seconds()
	}
	if cfg.ClusterAddr != "" {
		chost, cport, err := splitPort(cfg.ClusterAddr, "nats cluster address")
		if err != nil {
			return nil, err
		}
		user, pass := routeCredentials(cfg.ClusterSecret)
		opts.Cluster = server.ClusterOpts{
			Name: ClusterName, Host: chost, Port: cport,
			Username: user, Password: pass,
		}
		if cfg.TLS != nil {
			opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = cfg.TLS.Clone(), tlsTimeout.Seconds()
		}
		for _, r := range cfg.Routes {
			opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats", User: url.UserPassword(user, pass), Host: r})
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("ingress: embedded nats: %w", err)
	}
	if auth != nil {
		auth.srv.Store(s)
	}
	if cfg.Logger != nil {
		s.SetLoggerV2(natsLogger{cfg.Logger.With("component", "nats")}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("ingress: embedded nats did not start on %s within 10s", cfg.Addr)
	}
	return s, nil
}

func splitPort(addr, what string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("ingress: %s %q: %w", what, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("ingress: %s port %q: %w", what, portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// routeCredentials derives the route user and password from the cluster
// secret, so every node computes the same ones and nothing else joins.
func routeCredentials(secret string) (user, pass string) {
	return "rhizon", stream.Derive("rhizon nats route v1", secret)
}

// Client users of the embedded server.
const (
	// NodeUser is the user the nodes, and operators' tools, connect as.
	NodeUser = "rhizon"
)

// NodeCredentials derives the embedded servers' node user and password from
// the cluster secret, so every node, and an operator who has the secret,
// computes the same ones. They differ from the route credentials.
func NodeCredentials(secret string) (user, pass string) {
	return NodeUser, stream.Derive("rhizon nats client v1", secret)
}

// natsLogger passes the embedded server's log to slog.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.l.Info(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(format string, v ...any)  {}
