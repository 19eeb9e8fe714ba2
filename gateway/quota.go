package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/outcome"
)

// Reasons of the quota refusals (ErrorInfo.Reason, domain ErrorDomain).
const (
	// ReasonRateLimited: the tenant or the token's principal sent more
	// requests than its rate and burst allow. Nothing was applied; retry
	// after RetryAfterTrailer.
	ReasonRateLimited = outcome.ReasonRateLimited
	// ReasonQuotaExceeded: the tenant stores more bytes than its storage
	// quota. Nothing was applied; writes stay refused until the quota is
	// raised (history is immutable, so writing less does not free space).
	ReasonQuotaExceeded = outcome.ReasonQuotaExceeded

	// RetryAfterTrailer is the gRPC header and trailer of a rate-limited
	// call: whole seconds to wait, rounded up (as HTTP's Retry-After).
	RetryAfterTrailer = "retry-after"
	// RetryAfterMsTrailer is the same wait in milliseconds.
	RetryAfterMsTrailer = "retry-after-ms"
)

// DefaultStorageRefresh is how often a node re-measures the bytes each tenant
// stores, when the quota file does not say.
const DefaultStorageRefresh = 5 * time.Second

// QuotaFile is the on-disk form of the gateway's quotas (--quotas), JSON or
// YAML. Rates are requests per second; 0 or absent inherits the default,
// -1 means unlimited. Every number is cluster-wide: each node enforces its
// share (see Quotas).
//
//	default:    {rate: 100, burst: 200, storage_bytes: 1073741824}
//	tenants:    {big: {rate: 1000, burst: 2000}, free: {storage_bytes: 10485760}}
//	principals: {batch-loader: {rate: 50, burst: 50}}
//	principal_default: {rate: 500}
type QuotaFile struct {
	Default          QuotaLimits            `json:"default" yaml:"default"`
	Tenants          map[string]QuotaLimits `json:"tenants" yaml:"tenants"`
	Principals       map[string]QuotaLimits `json:"principals" yaml:"principals"`
	PrincipalDefault QuotaLimits            `json:"principal_default" yaml:"principal_default"`
	// StorageRefresh is how often usage is re-measured ("5s"); it bounds
	// how far a tenant can write past its storage quota.
	StorageRefresh string `json:"storage_refresh" yaml:"storage_refresh"`
}

// QuotaLimits is one entry of a QuotaFile.
type QuotaLimits struct {
	Rate  float64 `json:"rate" yaml:"rate"`
	Burst int     `json:"burst" yaml:"burst"`
	// StorageBytes bounds what a tenant stores; ignored for principals.
	StorageBytes int64 `json:"storage_bytes" yaml:"storage_bytes"`
}

// limits is one resolved entry: unlimited where zero.
type limits struct {
	rate    float64
	burst   int
	storage int64
}

func resolve(over, def QuotaLimits) limits {
	pick := func(o, d float64) float64 {
		switch {
		case o < 0:
			return 0
		case o > 0:
			return o
		}
		return max(d, 0)
	}
	l := limits{
		rate:    pick(over.Rate, def.Rate),
		burst:   int(pick(float64(over.Burst), float64(def.Burst))),
		storage: int64(pick(float64(over.StorageBytes), float64(def.StorageBytes))),
	}
	if l.rate > 0 && l.burst == 0 {
		// A rate without a burst would refuse every request; one second's
		// worth is the usual default.
		l.burst = max(1, int(math.Ceil(l.rate)))
	}
	return l
}

// StorageUsage is implemented by backends that can measure how many bytes
// each tenant stores (the node: over the shard replicas it holds).
type StorageUsage interface {
	TenantBytes() (map[string]int64, error)
}

// NodeCounter is implemented by backends that know how many nodes share the
// cluster's gateway traffic.
type NodeCounter interface {
	LiveNodes() int
}

// Quotas enforces per-tenant and per-principal request rates and per-tenant
// storage quotas at the gateway. It is safe for concurrent use.
//
// Each node enforces its share: a limit of R requests per second becomes
// R/N on each of N live nodes (bursts likewise, at least 1). The gateway
// that receives a request decides before anything is forwarded or
// proposed, so a refused request costs no network hop, no Raft entry and
// no coordination between nodes; clients spread a tenant's requests over
// the nodes that lead its shards, so the shares add up to the configured
// figure. The price: a tenant whose traffic all lands on one node gets
// 1/N of its rate. Central (leader-side) counting would be exact but adds
// a round trip to every request, including the ones it refuses.
type Quotas struct {
	file    QuotaFile
	refresh time.Duration
	now     func() time.Time
	nodes   func() int

	mu         sync.Mutex
	tenants    map[string]*limiter
	principals map[string]*limiter
	nodesN     int       // live nodes, as last asked
	nodesAt    time.Time // when

	usage atomic.Pointer[map[string]int64]
}

type limiter struct {
	l     limits
	nodes int // the share the limiter was sized for
	lim   *rate.Limiter
}

// NewQuotas validates f and returns its Quotas. source names where f came
// from, for error messages.
func NewQuotas(source string, f QuotaFile) (*Quotas, error) {
	check := func(what string, l QuotaLimits) error {
		for _, v := range []float64{l.Rate, float64(l.Burst), float64(l.StorageBytes)} {
			if v < -1 || math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("gateway: %s: %s: limits must be positive, 0 (inherit the default) or -1 (unlimited)", source, what)
			}
		}
		return nil
	}
	if err := check("default", f.Default); err != nil {
		return nil, err
	}
	if err := check("principal_default", f.PrincipalDefault); err != nil {
		return nil, err
	}
	for t, l := range f.Tenants {
		if err := actor.ValidateID("tenant", t); err != nil {
			return nil, fmt.Errorf("gateway: %s: tenants: %s", source, rejectionText(err))
		}
		if err := check("tenant "+t, l); err != nil {
			return nil, err
		}
	}
	for p, l := range f.Principals {
		if err := check("principal "+p, l); err != nil {
			return nil, err
		}
		if l.StorageBytes != 0 {
			return nil, fmt.Errorf("gateway: %s: principal %s: storage_bytes is per tenant; set it under tenants", source, p)
		}
	}
	q := &Quotas{file: f, refresh: DefaultStorageRefresh, now: time.Now, nodes: func() int { return 1 },
		tenants: map[string]*limiter{}, principals: map[string]*limiter{}}
	if f.StorageRefresh != "" {
		d, err := time.ParseDuration(f.StorageRefresh)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("gateway: %s: storage_refresh %q: want a positive duration such as \"5s\"", source, f.StorageRefresh)
		}
		q.refresh = d
	}
	return q, nil
}

// ParseQuotas reads a QuotaFile from data: JSON when it starts with "{",
// else YAML (JSON is YAML too). Unknown keys are errors.
func ParseQuotas(source string, data []byte) (*Quotas, error) {
	var f QuotaFile
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(t))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("gateway: quotas %s: %w", source, err)
		}
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		// io.EOF: an empty file, no quotas.
		if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("gateway: quotas %s: %w", source, err)
		}
	}
	return NewQuotas("quotas "+source, f)
}

// LoadQuotas reads the quota file at path, or parses path itself when it is
// inline JSON (a node's YAML config may hold the quotas as a map).
func LoadQuotas(path string) (*Quotas, error) {
	if strings.HasPrefix(strings.TrimSpace(path), "{") {
		return ParseQuotas("(inline)", []byte(path))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gateway: read quotas: %w", err)
	}
	return ParseQuotas(filepath.Base(path), data)
}

// Refresh is how often storage usage is re-measured.
func (q *Quotas) Refresh() time.Duration { return q.refresh }

// tenantLimits resolves the limits of tenant.
func (q *Quotas) tenantLimits(tenant string) limits {
	return resolve(q.file.Tenants[tenant], q.file.Default)
}

func (q *Quotas) principalLimits(id string) limits {
	return resolve(q.file.Principals[id], q.file.PrincipalDefault)
}

// limiterLocked returns the limiter of key in m, sized for the current node
// count, or nil when l has no rate. q.mu must be held.
func (q *Quotas) limiterLocked(m map[string]*limiter, key string, l limits, nodes int) *rate.Limiter {
	if l.rate <= 0 {
		return nil
	}
	lim, ok := m[key]
	r := rate.Limit(l.rate / float64(nodes))
	b := max(1, int(math.Ceil(float64(l.burst)/float64(nodes))))
	if !ok {
		lim = &limiter{l: l, nodes: nodes, lim: rate.NewLimiter(r, b)}
		m[key] = lim
	} else if lim.nodes != nodes {
		now := q.now()
		lim.lim.SetLimitAt(now, r)
		lim.lim.SetBurstAt(now, b)
		lim.nodes = nodes
	}
	return lim.lim
}

// nodeCountLocked returns the live node count, asking the backend at most
// once a second (the membership copies its member list on every call).
// q.mu must be held.
func (q *Quotas) nodeCountLocked(now time.Time) int {
	if q.nodesN == 0 || now.Sub(q.nodesAt) >= time.Second || now.Before(q.nodesAt) {
		q.nodesN, q.nodesAt = max(1, q.nodes()), now
	}
	return q.nodesN
}

// admit takes n requests' worth of tokens from the tenant's and the
// principal's buckets, or none: it returns how long to wait before n can be
// admitted when either bucket is short.
func (q *Quotas) admit(tenant, principal string, n int) (ok bool, wait time.Duration) {
	if q == nil {
		return true, 0
	}
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	nodes := q.nodeCountLocked(now)
	lims := [2]*rate.Limiter{
		q.limiterLocked(q.tenants, tenant, q.tenantLimits(tenant), nodes),
		q.limiterLocked(q.principals, principal, q.principalLimits(principal), nodes),
	}
	ok = true
	var res []*rate.Reservation
	for _, lim := range lims {
		if lim == nil {
			continue
		}
		if n > lim.Burst() {
			// More than the bucket ever holds: say when a burst's worth is
			// back, the most a client can hope to send at once.
			ok = false
			wait = max(wait, time.Duration(float64(lim.Burst())/float64(lim.Limit())*float64(time.Second)))
			continue
		}
		r := lim.ReserveN(now, n)
		res = append(res, r)
		if d := r.DelayFrom(now); d > 0 {
			ok = false
			wait = max(wait, d)
		}
	}
	if ok {
		return true, 0
	}
	// Give back what was taken: a refused request costs nothing.
	for _, r := range res {
		r.CancelAt(now)
	}
	return false, max(wait, time.Millisecond)
}

// storageExceeded reports whether tenant stores more than its quota, with
// the figures for the message.
func (q *Quotas) storageExceeded(tenant string) (used, quota int64, over bool) {
	if q == nil {
		return 0, 0, false
	}
	quota = q.tenantLimits(tenant).storage
	if quota <= 0 {
		return 0, 0, false
	}
	u := q.usage.Load()
	if u == nil {
		return 0, quota, false
	}
	used = (*u)[tenant]
	return used, quota, used >= quota
}

// SetUsage replaces the measured bytes per tenant.
func (q *Quotas) SetUsage(u map[string]int64) { q.usage.Store(&u) }

// run keeps the usage fresh until ctx ends.
func (q *Quotas) run(ctx context.Context, src StorageUsage, log func(error)) {
	t := time.NewTicker(q.refresh)
	defer t.Stop()
	for {
		if u, err := src.TenantBytes(); err != nil {
			log(err)
		} else {
			q.SetUsage(u)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// rateLimited is the ResourceExhausted status of a request refused by a rate
// limit. It sets the retry-after header and trailer on a gRPC call, and
// carries a RetryInfo detail; the HTTP layer turns that into Retry-After.
func rateLimited(ctx context.Context, tenant, principal string, wait time.Duration, what string) error {
	secs := int64(math.Ceil(wait.Seconds()))
	ms := max(1, wait.Milliseconds())
	md := metadata.Pairs(RetryAfterTrailer, strconv.FormatInt(secs, 10), RetryAfterMsTrailer, strconv.FormatInt(ms, 10))
	// Outside a gRPC handler (HTTP, or a batch's inner command) these fail;
	// the status's RetryInfo says the same.
	_ = grpc.SetHeader(ctx, md)
	_ = grpc.SetTrailer(ctx, md)
	st := status.New(codes.ResourceExhausted, fmt.Sprintf(
		"rate limit: tenant %q / principal %q sent more requests than its quota allows; %s was NOT applied; retry after %d ms",
		tenant, principal, what, ms))
	if d, err := st.WithDetails(
		&errdetails.ErrorInfo{Reason: ReasonRateLimited, Domain: ErrorDomain,
			Metadata: map[string]string{"tenant": tenant, "principal": principal, "retry_after_ms": strconv.FormatInt(ms, 10)}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Duration(ms) * time.Millisecond)},
	); err == nil {
		st = d
	}
	return st.Err()
}

// quotaExceeded is the ResourceExhausted status of a write refused because
// the tenant is over its storage quota.
func quotaExceeded(tenant string, used, quota int64) error {
	return statusWithInfo(codes.ResourceExhausted, ReasonQuotaExceeded,
		map[string]string{"tenant": tenant, "used_bytes": strconv.FormatInt(used, 10), "quota_bytes": strconv.FormatInt(quota, 10)},
		fmt.Sprintf("quota_exceeded: tenant %q stores %d bytes and its storage quota is %d bytes; the write was NOT applied; ask the operator to raise storage_bytes (reads still work)",
			tenant, used, quota))
}

// retryAfter returns the wait a status asks for, if any (from RetryInfo).
func retryAfter(st *status.Status) (time.Duration, bool) {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// startQuotas ties the quotas to the backend: the node count that sizes each
// node's share, and the usage measurements, refreshed until Shutdown.
func (s *Server) startQuotas(b Backend) {
	q := s.quotas
	if q == nil {
		return
	}
	if nc, ok := b.(NodeCounter); ok {
		q.nodes = nc.LiveNodes
	}
	su, ok := b.(StorageUsage)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-s.closing
		cancel()
	}()
	go q.run(ctx, su, func(err error) { s.log.Warn("measure storage per tenant", "err", err) })
}

// admitRequest charges one request (n commands) of principal in tenant to
// the rate limits, or returns the ResourceExhausted status to answer.
func (s *Server) admitRequest(ctx context.Context, id Identity, tenant string, n int, what string) error {
	ok, wait := s.quotas.admit(tenant, id.Principal.ID, n)
	if ok {
		return nil
	}
	return rateLimited(ctx, tenant, id.Principal.ID, wait, what)
}

// admitWrite is admitRequest for a write, which the storage quota also
// bounds.
func (s *Server) admitWrite(ctx context.Context, id Identity, tenant string) error {
	if used, quota, over := s.quotas.storageExceeded(tenant); over {
		return quotaExceeded(tenant, used, quota)
	}
	return s.admitRequest(ctx, id, tenant, 1, "the command")
}
