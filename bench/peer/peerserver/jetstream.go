package peerserver

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rhizon/rhizon/bench/peer"
)

// startNATSServer starts server i of a NATS cluster laid out by l, routed
// to the others, with clustered JetStream. For jetstream-kv-sync every
// server fsyncs each write (sync_interval: always); otherwise the servers
// flush on their default interval (2 minutes) and rely on replication for
// durability.
func startNATSServer(ctx context.Context, l peer.Layout, i int, cfg Config) (*Server, error) {
	var routes []string
	for _, p := range l.PeerPorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	name := peer.ServerName(l.Kind, i)
	opts := &server.Options{
		ServerName: name,
		Host:       "127.0.0.1",
		Port:       l.ClientPorts[i],
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		SyncAlways: l.Kind == peer.KindJetStreamKVSync,
		Cluster:    server.ClusterOpts{Name: "rhizon-bench", Host: "127.0.0.1", Port: l.PeerPorts[i]},
		// Every server lists all three (its own route is ignored):
		// clustered JetStream needs configured routes on each server.
		Routes: server.RoutesFromStr(strings.Join(routes, ",")),
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	s.SetLoggerV2(&natsLog{w: cfg.Log, name: name}, false, false, false)
	s.Start()
	stop := func() error {
		s.Shutdown()
		s.WaitForShutdown()
		return nil
	}
	if !s.ReadyForConnections(30 * time.Second) {
		_ = stop()
		// A lost port race shows in the log as "address already in use",
		// which is where AddrInUse finds it.
		return nil, fmt.Errorf("nats server %s not ready for connections", name)
	}
	// A JetStream write needs the meta group's leader (to place the
	// stream) and every server caught up with it: a server is current
	// only once it knows a leader and has its log.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !s.JetStreamIsCurrent() {
		select {
		case <-ctx.Done():
			_ = stop()
			return nil, fmt.Errorf("nats server %s: no jetstream meta leader: %w", name, ctx.Err())
		case <-tick.C:
		}
	}
	return &Server{URL: s.ClientURL(), close: stop}, nil
}

// natsLog passes the servers' warnings and errors to a writer.
type natsLog struct {
	w    io.Writer
	name string
}

func (l *natsLog) logf(level, format string, v ...any) {
	fmt.Fprintf(l.w, "nats %s %s: %s\n", l.name, level, fmt.Sprintf(format, v...))
}

func (l *natsLog) Noticef(string, ...any)         {}
func (l *natsLog) Debugf(string, ...any)          {}
func (l *natsLog) Tracef(string, ...any)          {}
func (l *natsLog) Warnf(format string, v ...any)  { l.logf("warn", format, v...) }
func (l *natsLog) Errorf(format string, v ...any) { l.logf("error", format, v...) }
func (l *natsLog) Fatalf(format string, v ...any) { l.logf("fatal", format, v...) }
