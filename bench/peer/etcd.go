package peer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// startEtcd starts three embedded etcd members with etcd's defaults
// (100 ms heartbeat, 1 s election timeout, WAL fsync on every Ready
// batch): the configuration etcd documents for production, on loopback.
func startEtcd(ctx context.Context, cfg Config) (*Cluster, error) {
	ports, err := freePorts(2 * Replicas)
	if err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	lg := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(enc),
		zapcore.Lock(zapcore.AddSync(cfg.Log)), zapcore.WarnLevel,
	))
	names := make([]string, Replicas)
	peerURLs := make([]url.URL, Replicas)
	clientURLs := make([]url.URL, Replicas)
	var initial []string
	for i := range Replicas {
		names[i] = fmt.Sprintf("m%d", i+1)
		peerURLs[i] = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		clientURLs[i] = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		initial = append(initial, names[i]+"="+peerURLs[i].String())
	}

	members := make([]*embed.Etcd, Replicas)
	errs := make([]error, Replicas)
	var wg sync.WaitGroup
	// Concurrently: a member's start does not wait for its peers, but
	// starting them one after another would only add up their disk setup.
	for i := range Replicas {
		wg.Go(func() {
			ec := embed.NewConfig()
			ec.Name = names[i]
			ec.Dir = filepath.Join(cfg.Dir, names[i])
			ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{peerURLs[i]}, []url.URL{peerURLs[i]}
			ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{clientURLs[i]}, []url.URL{clientURLs[i]}
			ec.InitialCluster = strings.Join(initial, ",")
			ec.InitialClusterToken = "rhizon-bench"
			ec.ClusterState = embed.ClusterStateFlagNew
			ec.Logger, ec.LogLevel = "zap", "warn"
			ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg.Named(names[i]))
			members[i], errs[i] = embed.StartEtcd(ec)
		})
	}
	wg.Wait()
	// The followers stop first: a leader stopping while its peers are up
	// hands its leadership to one of them, which then waits out the same
	// handover as it stops too (7 s in all); once its peers are gone, the
	// leader has no one to hand over to and stops at once.
	closeAll := func() error {
		var cw sync.WaitGroup
		var leaders []*embed.Etcd
		for _, m := range members {
			switch {
			case m == nil:
			case m.Server.Leader() == m.Server.MemberID():
				leaders = append(leaders, m)
			default:
				cw.Go(m.Close)
			}
		}
		cw.Wait()
		for _, m := range leaders {
			m.Close()
		}
		return nil
	}
	if err := errors.Join(errs...); err != nil {
		_ = closeAll()
		return nil, err
	}
	// ReadyNotify closes once the member has published itself through the
	// Raft log, so a leader exists and a quorum answers.
	for _, m := range members {
		select {
		case <-m.Server.ReadyNotify():
		case err := <-m.Err():
			_ = closeAll()
			return nil, fmt.Errorf("etcd member %s: %w", m.Config().Name, err)
		case <-ctx.Done():
			_ = closeAll()
			return nil, fmt.Errorf("etcd not ready: %w", ctx.Err())
		}
	}
	c := &Cluster{Kind: KindEtcd, close: closeAll}
	for _, u := range clientURLs {
		c.URLs = append(c.URLs, u.String())
	}
	return c, nil
}
