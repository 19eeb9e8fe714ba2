package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The KV buckets the jetstream-kv targets use.
const (
	JetStreamBucket         = "rhizon_bench"
	JetStreamBucketNoDirect = "rhizon_bench_nodirect" // jetstream-kv-sync-nodirect's
)

// JetStreamKV is the target for a NATS JetStream key-value bucket with 3
// replicas. w1-occ is Get then Update(key, value, revision): the update is
// a publish that the stream accepts only if the key's last revision is
// still the one read, otherwise a Conflict. A command is an unconditional
// Put. Reads use the bucket's defaults (direct get, which any replica may
// answer, so a read can miss the last update), as a user of the KV API
// gets them; jetstream-kv-sync-nodirect's bucket has direct gets off, so
// its reads go to the stream's leader.
type JetStreamKV struct {
	name  string
	cfg   PeerConfig
	conns []*nats.Conn
	next  atomic.Uint64
	// kvs, one handle per connection, is filled by Setup, which the
	// runner calls before any operation and never concurrently with one.
	kvs []jetstream.KeyValue
}

var _ Target = (*JetStreamKV)(nil)

// NewJetStreamKV connects cfg.Conns clients; name labels the target in
// reports (jetstream-kv or jetstream-kv-sync: the client does the same
// either way, the servers' fsync setting differs; jetstream-kv-sync-nodirect:
// the bucket has no direct gets).
func NewJetStreamKV(name string, cfg PeerConfig) (*JetStreamKV, error) {
	if err := cfg.normalize(name); err != nil {
		return nil, err
	}
	t := &JetStreamKV{name: name, cfg: cfg}
	for i := range cfg.Conns {
		nc, err := nats.Connect(strings.Join(rotate(cfg.URLs, i), ","),
			nats.DontRandomize(), nats.Name("rhizon-bench"), nats.Timeout(DefaultPeerDialTimeout))
		if err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("bench: nats connect: %w", err)
		}
		t.conns = append(t.conns, nc)
	}
	return t, nil
}

// Name is the label given to NewJetStreamKV.
func (t *JetStreamKV) Name() string { return t.name }

// Close drains nothing: the runner has waited for every operation.
func (t *JetStreamKV) Close() error {
	for _, nc := range t.conns {
		nc.Close()
	}
	t.conns = nil
	return nil
}

// Setup creates the bucket (3 replicas, file storage, one revision of
// history) and, for w1-occ, the workload's keys, each only if absent.
// The bucket's creation is retried for a while: right after the cluster
// starts, its meta leader may not yet place a replicated stream.
func (t *JetStreamKV) Setup(ctx context.Context, w Workload) error {
	if err := t.openBucket(ctx); err != nil {
		return err
	}
	if w.Op != OpOCC {
		return nil
	}
	doc := w.Payload(0)
	return forEachEntity(ctx, w, t.cfg.SetupConcurrency, func(ctx context.Context, key string) error {
		for {
			_, err := t.kv().Create(ctx, key, doc)
			if err == nil || errors.Is(err, jetstream.ErrKeyExists) {
				return nil
			}
			// A bucket just created may not have elected its stream's
			// leader yet: nothing answers the write. Wait for one.
			if !errors.Is(err, jetstream.ErrNoStreamResponse) || ctx.Err() != nil {
				return fmt.Errorf("bench: create %s: %w", key, classifyNATS(err))
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
}

func (t *JetStreamKV) openBucket(ctx context.Context) error {
	if len(t.kvs) == len(t.conns) {
		return nil
	}
	bucket := t.bucket()
	cfg := jetstream.KeyValueConfig{Bucket: bucket, Replicas: 3, History: 1, Storage: jetstream.FileStorage}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var kvs []jetstream.KeyValue
	for i, nc := range t.conns {
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		for {
			// Each attempt has its own bound: a JetStream API request sent
			// before the servers have a meta leader may never be answered,
			// and waiting on it with the whole budget left no second try
			// (a test saw the bucket created meanwhile and setup time out).
			actx, acancel := context.WithTimeout(ctx, 5*time.Second)
			var kv jetstream.KeyValue
			switch {
			case i == 0 && t.name == JetStreamKVSyncNoDirect:
				kv, err = createNoDirectBucket(actx, js, cfg)
			case i == 0:
				kv, err = js.CreateOrUpdateKeyValue(actx, cfg)
			default:
				kv, err = js.KeyValue(actx, bucket)
			}
			acancel()
			if err == nil {
				kvs = append(kvs, kv)
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("bench: kv bucket %s: %w", bucket, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	t.kvs = kvs
	return nil
}

// bucket is the target's bucket: the no-direct variant's has a name of its
// own, so that on servers shared with another target (--peer-addrs) the
// two never reconfigure each other's.
func (t *JetStreamKV) bucket() string {
	if t.name == JetStreamKVSyncNoDirect {
		return JetStreamBucketNoDirect
	}
	return JetStreamBucket
}

// createNoDirectBucket creates cfg's bucket as nats.go would but with
// AllowDirect off, which nats.go always turns on: the KV handle then reads
// through the stream's leader (a JetStream "get message" request) instead
// of a direct get that any replica may answer. The stream is the one
// nats.go's CreateKeyValue makes for cfg (jetstream/kv.go,
// prepareKeyValueConfig, v1.55.0), with the KV handle bound to it by name.
func createNoDirectBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              "KV_" + cfg.Bucket,
		Subjects:          []string{"$KV." + cfg.Bucket + ".>"},
		MaxMsgsPerSubject: int64(cfg.History),
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           cfg.Storage,
		Replicas:          cfg.Replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		AllowDirect:       false,
		Discard:           jetstream.DiscardNew,
	})
	if err != nil {
		return nil, err
	}
	return js.KeyValue(ctx, cfg.Bucket)
}

func (t *JetStreamKV) kv() jetstream.KeyValue {
	return t.kvs[t.next.Add(1)%uint64(len(t.kvs))]
}

var errNoBucket = errors.New("bench: jetstream-kv: Setup has not opened the bucket")

// ReadVersion returns the key's revision (0 for a missing key: an update
// at revision 0 then requires it to be still missing).
func (t *JetStreamKV) ReadVersion(ctx context.Context, entity string) (uint64, error) {
	if len(t.kvs) == 0 {
		return 0, errNoBucket
	}
	e, err := t.kv().Get(ctx, entity)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, classifyNATS(err)
	}
	return e.Revision(), nil
}

// ConditionalUpdate updates the key if its revision is still expected.
func (t *JetStreamKV) ConditionalUpdate(ctx context.Context, entity string, expected uint64, payload []byte) (Outcome, error) {
	if len(t.kvs) == 0 {
		return 0, errNoBucket
	}
	_, err := t.kv().Update(ctx, entity, payload, expected)
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return Conflict, nil
	case err != nil:
		return 0, classifyNATS(err)
	}
	return OK, nil
}

// Command puts payload unconditionally.
func (t *JetStreamKV) Command(ctx context.Context, entity string, payload []byte) (Outcome, error) {
	if len(t.kvs) == 0 {
		return 0, errNoBucket
	}
	if _, err := t.kv().Put(ctx, entity, payload); err != nil {
		return 0, classifyNATS(err)
	}
	return OK, nil
}

// classifyNATS wraps a NATS client error with its kind. A publish that
// timed out may still be stored, but, as for the other targets, an expired
// deadline is reported as Timeout: what it tells is that the target was
// too slow. No responders, a closed connection and JetStream's 503s are
// Unavailable.
func classifyNATS(err error) error {
	kind := KindOther
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		kind = KindTimeout
	case errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		(errors.As(err, &apiErr) && apiErr.Code == 503):
		kind = KindUnavailable
	}
	return &OpError{Kind: kind, Err: err}
}
