package peer

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// startEtcdMember starts member i of an etcd cluster laid out by l, with
// etcd's defaults (100 ms heartbeat, 1 s election timeout, WAL fsync on
// every Ready batch): the configuration etcd documents for production, on
// loopback.
func startEtcdMember(ctx context.Context, l Layout, i int, cfg Config) (*Server, error) {
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
		initial = append(initial, ServerName(KindEtcd, j)+"="+u.String())
	}
	name := ServerName(KindEtcd, i)
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
	return &Server{
		URL:      clientURL.String(),
		isLeader: func() bool { return m.Server.Leader() == m.Server.MemberID() },
		close:    func() error { m.Close(); return nil },
	}, nil
}
