package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Etcd is the target for an etcd v3 cluster. w1-occ is the read-modify-
// write etcd documents: Get (linearizable, through the leader's read
// index) then a Txn that puts only if the key's ModRevision is still the
// one read; a failed compare is a Conflict. A command (w1-command, hot) is
// an unconditional Put of the same document: etcd has no server-side
// logic, so one round trip that writes the value is the closest form.
type Etcd struct {
	cfg     PeerConfig
	clients []*clientv3.Client
	next    atomic.Uint64
}

var _ Target = (*Etcd)(nil)

// NewEtcd connects cfg.Conns clients to the cluster.
func NewEtcd(cfg PeerConfig) (*Etcd, error) {
	if err := cfg.normalize("etcd"); err != nil {
		return nil, err
	}
	t := &Etcd{cfg: cfg}
	for i := range cfg.Conns {
		c, err := clientv3.New(clientv3.Config{
			Endpoints: rotate(cfg.URLs, i), DialTimeout: DefaultPeerDialTimeout, Logger: zap.NewNop(),
		})
		if err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("bench: etcd client: %w", err)
		}
		t.clients = append(t.clients, c)
	}
	return t, nil
}

// Name is "etcd".
func (t *Etcd) Name() string { return "etcd" }

// Close closes every client.
func (t *Etcd) Close() error {
	var errs []error
	for _, c := range t.clients {
		errs = append(errs, c.Close())
	}
	t.clients = nil
	return errors.Join(errs...)
}

func (t *Etcd) client() *clientv3.Client {
	return t.clients[t.next.Add(1)%uint64(len(t.clients))]
}

// Setup creates the workload's keys for w1-occ, each only if absent (a
// Txn on CreateRevision == 0), so that setting up again writes nothing
// and every update of the run replaces an existing document, as Rhizon's
// kv updates do.
func (t *Etcd) Setup(ctx context.Context, w Workload) error {
	if w.Op != OpOCC {
		return nil
	}
	doc := string(w.Payload(0))
	return forEachEntity(ctx, w, t.cfg.SetupConcurrency, func(ctx context.Context, key string) error {
		_, err := t.client().Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, doc)).
			Commit()
		if err != nil {
			return fmt.Errorf("bench: create %s: %w", key, classifyEtcd(err))
		}
		return nil
	})
}

// ReadVersion returns the key's ModRevision (0 for a missing key, which
// the compare then requires to be still missing).
func (t *Etcd) ReadVersion(ctx context.Context, entity string) (uint64, error) {
	resp, err := t.client().Get(ctx, entity)
	if err != nil {
		return 0, classifyEtcd(err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return uint64(resp.Kvs[0].ModRevision), nil
}

// ConditionalUpdate puts payload if the key's ModRevision is expected.
func (t *Etcd) ConditionalUpdate(ctx context.Context, entity string, expected uint64, payload []byte) (Outcome, error) {
	resp, err := t.client().Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(entity), "=", int64(expected))).
		Then(clientv3.OpPut(entity, string(payload))).
		Commit()
	if err != nil {
		return 0, classifyEtcd(err)
	}
	if !resp.Succeeded {
		return Conflict, nil
	}
	return OK, nil
}

// Command puts payload unconditionally.
func (t *Etcd) Command(ctx context.Context, entity string, payload []byte) (Outcome, error) {
	if _, err := t.client().Put(ctx, entity, string(payload)); err != nil {
		return 0, classifyEtcd(err)
	}
	return OK, nil
}

// classifyEtcd wraps an etcd client error with its kind. etcd's own
// request timeouts mean the proposal may still commit (UnknownOutcome);
// no leader, overload and connection loss before sending are Unavailable.
func classifyEtcd(err error) error {
	kind := KindOther
	switch {
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
		kind = KindTimeout
	case errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost):
		kind = KindUnknownOutcome
	case errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrLeaderChanged) ||
		errors.Is(err, rpctypes.ErrTooManyRequests) ||
		status.Code(err) == codes.Unavailable || status.Code(err) == codes.ResourceExhausted:
		kind = KindUnavailable
	}
	return &OpError{Kind: kind, Err: err}
}
