package peerserver

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rhizon/rhizon/bench/peer"
)

// startEtcdMember starts member i of an etcd cluster laid out by l, with
// etcd's defaults (100 ms heartbeat, 1 s election timeout, WAL fsync on
// every Ready batch): the configuration etcd documents for production, on
// loopback.
func startEtcdMember(ctx context.Context, l peer.Layout, i int, cfg Config) (*Server, error) {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	lg := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(enc),
		zapcore.Lock(zapcore.AddSync(cfg.Log)), zapcore.WarnLevel,
	))
	loopback := func(port int) url.URL { return url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)} }
	var initial []string
	for j, p := range l.PeerPorts {
		u := loopback(p)
		initial = append(initial, peer.ServerName(peer.KindEtcd, j)+"="+u.String())
	}
	name := peer.ServerName(peer.KindEtcd, i)
	peerURL, clientURL := loopback(l.PeerPorts[i]), loopback(l.ClientPorts[i])
	ec := embed.NewConfig()
	ec.Name = name
	ec.Dir = cfg.Dir
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	ec.InitialCluster = strings.Join(initial, ",")
	ec.InitialClusterToken = "rhizon-bench"
	ec.ClusterState = embed.ClusterStateFlagNew
	ec.Logger, ec.LogLevel = "zap", "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg.Named(name))
	m, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, err
	}
	// ReadyNotify closes once the member has published itself through the
	// Raft log, so a leader exists and a quorum answers.
	select {
	case <-m.Server.ReadyNotify():
	case err := <-m.Err():
		m.Close()
		return nil, fmt.Errorf("etcd member %s: %w", name, err)
	case <-ctx.Done():
		m.Close()
		return nil, fmt.Errorf("etcd member %s not ready: %w", name, ctx.Err())
	}
	isLeader := func() bool { return m.Server.Leader() == m.Server.MemberID() }
	return &Server{
		URL:      clientURL.String(),
		isLeader: isLeader,
		close: func() error {
			// A leader stopping while its peers are up hands its leadership
			// to one of them, which then waits out the same handover as it
			// stops too (7 s in all); once its peers are gone, the leader
			// has no one to hand over to and stops at once. The peers of a
			// benchmark's cluster stop at the same time (in other processes,
			// or first, in Cluster.Close): wait a little for them.
			if isLeader() {
				waitPortsClosed(peerPortsBut(l, i), etcdPeersStopWait)
			}
			m.Close()
			return nil
		},
	}, nil
}

// etcdPeersStopWait bounds a stopping leader's wait for its peers: they
// stop in about a second.
const etcdPeersStopWait = 3 * time.Second

// peerPortsBut returns the peer ports of every server but i.
func peerPortsBut(l peer.Layout, i int) []int {
	var ports []int
	for j, p := range l.PeerPorts {
		if j != i {
			ports = append(ports, p)
		}
	}
	return ports
}

// waitPortsClosed waits until no loopback port of ports accepts
// connections, or at most within.
func waitPortsClosed(ports []int, within time.Duration) {
	deadline := time.Now().Add(within)
	for _, p := range ports {
		for time.Now().Before(deadline) {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 100*time.Millisecond)
			if err != nil {
				break
			}
			_ = c.Close()
			time.Sleep(50 * time.Millisecond)
		}
	}
}
