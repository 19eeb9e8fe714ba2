package peer

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startJetStream starts three nats-server servers routed to each other
// with clustered JetStream. syncAlways makes every server fsync each write
// (sync_interval: always); otherwise the servers flush on their default
// interval (2 minutes) and rely on replication for durability.
func startJetStream(ctx context.Context, cfg Config, syncAlways bool) (*Cluster, error) {
	// Routes must be known before the servers start, so the cluster ports
	// are picked up front, and the client ports with them: a server's own
	// port-0 choice could take a route port before its server binds it.
	ports, err := freePorts(2 * Replicas)
	if err != nil {
		return nil, err
	}
	var routes []string
	for _, p := range ports[:Replicas] {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	servers := make([]*server.Server, 0, Replicas)
	closeAll := func() error {
		for _, s := range servers {
			s.Shutdown()
		}
		for _, s := range servers {
			s.WaitForShutdown()
		}
		return nil
	}
	fail := func(err error) (*Cluster, error) {
		_ = closeAll()
		return nil, err
	}
	for i := range Replicas {
		name := fmt.Sprintf("n%d", i+1)
		opts := &server.Options{
			ServerName: name,
			Host:       "127.0.0.1",
			Port:       ports[Replicas+i],
			NoSigs:     true,
			JetStream:  true,
			StoreDir:   filepath.Join(cfg.Dir, name),
			SyncAlways: syncAlways,
			Cluster:    server.ClusterOpts{Name: "rhizon-bench", Host: "127.0.0.1", Port: ports[i]},
			// Every server lists all three (its own route is ignored):
			// clustered JetStream needs configured routes on each server.
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(opts)
		if err != nil {
			return fail(err)
		}
		s.SetLoggerV2(&natsLog{w: cfg.Log, name: name}, false, false, false)
		servers = append(servers, s)
		s.Start()
	}
	for _, s := range servers {
		if !s.ReadyForConnections(30 * time.Second) {
			return fail(fmt.Errorf("nats server %s not ready for connections", s.Name()))
		}
	}
	// A JetStream write needs the meta group's leader (to place the
	// stream) and every server caught up with it: poll for both.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		leader, current := false, true
		for _, s := range servers {
			leader = leader || s.JetStreamIsLeader()
			current = current && s.JetStreamIsCurrent()
		}
		if leader && current {
			break
		}
		select {
		case <-ctx.Done():
			return fail(fmt.Errorf("jetstream cluster has no meta leader: %w", ctx.Err()))
		case <-tick.C:
		}
	}
	kind := KindJetStreamKV
	if syncAlways {
		kind = KindJetStreamKVSync
	}
	c := &Cluster{Kind: kind, close: closeAll}
	for _, s := range servers {
		c.URLs = append(c.URLs, s.ClientURL())
	}
	return c, nil
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
