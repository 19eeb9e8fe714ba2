package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/rhizon/rhizon/actor"
)

// MinTokenLen is the shortest bearer token a token file may hold. Shorter
// tokens are guessable; the generated dev token is 64 hex characters.
const MinTokenLen = 16

// DefaultWorkspace is the workspace a request gets when it names none and the
// token's scope allows every workspace ("*") of its tenant.
const DefaultWorkspace = "default"

// TokenFile is the on-disk form of the gateway's credentials, in JSON or YAML:
//
//	{"tokens":[{"token":"...","principal":{"id":"dev","type":"user"},
//	            "scopes":[{"tenant":"dev","workspace":"*"}]},
//	           {"token":"...","role":"admin","principal":{"id":"ops","type":"user"},
//	            "not_after":"2027-01-01T00:00:00Z"}]}
type TokenFile struct {
	Tokens []TokenEntry `json:"tokens" yaml:"tokens"`
}

// TokenEntry binds one bearer token to the principal it authenticates, its
// role and the scopes that principal may act in. The first scope is the
// default one.
type TokenEntry struct {
	Token string `json:"token" yaml:"token"`
	// Role is tenant, system or admin (see Role). Empty means system for a
	// principal of type system (what such a token could do before roles,
	// minus cluster administration) and tenant for every other type.
	Role      string         `json:"role,omitempty" yaml:"role,omitempty"`
	Principal TokenPrincipal `json:"principal" yaml:"principal"`
	Scopes    []TokenScope   `json:"scopes" yaml:"scopes"`
	// NotAfter, an RFC 3339 time, is when the token stops working. Empty
	// means never.
	NotAfter string `json:"not_after,omitempty" yaml:"not_after,omitempty"`
}

// Role is what a token may do beyond acting in its scopes.
type Role string

const (
	// RoleTenant acts in its scopes as its own principal (user, service or
	// agent). It sees the routing part of Status only.
	RoleTenant Role = "tenant"
	// RoleSystem (principal type system) may also act on behalf of another
	// principal (on_behalf_of), within its scopes only. No cluster
	// operations, routing Status only.
	RoleSystem Role = "system"
	// RoleAdmin runs the cluster: Drain and the full Status (indexes, state
	// hashes, placement). Its scopes, which may be empty, bound the tenants'
	// data it may touch like any token's; it may not impersonate.
	RoleAdmin Role = "admin"
)

// TokenPrincipal mirrors actor.Principal with YAML tags, so that the file
// format does not depend on the actor package's field tags.
type TokenPrincipal struct {
	ID   string `json:"id" yaml:"id"`
	Type string `json:"type" yaml:"type"`
}

// TokenScope mirrors actor.Scope with YAML tags.
type TokenScope struct {
	Tenant    string `json:"tenant" yaml:"tenant"`
	Workspace string `json:"workspace" yaml:"workspace"`
}

// Identity is what a verified token stands for. The gateway copies Principal
// and Scopes into every command's security context; the engine re-checks them
// on every replica.
type Identity struct {
	Principal actor.Principal
	Scopes    []actor.Scope
	// DefaultScope fills an empty tenant/workspace in a request: the first
	// scope, with workspace "*" replaced by DefaultWorkspace.
	DefaultScope actor.Scope
	Role         Role
	// NotAfter is when the token expires; zero means never.
	NotAfter time.Time
	// tokenHash is sha256 of the token: what per-token limits count by,
	// without keeping the secret.
	tokenHash [sha256.Size]byte
}

// Security returns the security context commands of this identity carry.
func (id Identity) Security() actor.Security {
	return actor.Security{Principal: id.Principal, Scopes: slices.Clone(id.Scopes)}
}

// defaultWorkspace picks the workspace for a request that names tenant but no
// workspace: the first scope of that tenant decides, so a token scoped to
// {A,"*"} and {B,"ops"} addresses B/ops, not B/default.
func (id Identity) defaultWorkspace(tenant string) string {
	for _, s := range id.Scopes {
		if s.Tenant == tenant {
			if s.Workspace == "*" {
				return DefaultWorkspace
			}
			return s.Workspace
		}
	}
	return id.DefaultScope.Workspace
}

// Auth verifies bearer tokens. It is safe for concurrent use; Reload and
// WatchFile replace its tokens in place, atomically.
type Auth struct {
	// byHash is keyed by sha256(token): a lookup compares digests, never the
	// secret itself, so response timing reveals nothing about how much of a
	// guessed token was right (a digest prefix is of no use to an attacker).
	byHash atomic.Pointer[map[[sha256.Size]byte]Identity]
	// path is the token file Reload reads; empty for NewAuth's.
	path string
	// now is the clock expiry is checked against; tests replace it.
	now func() time.Time

	reloadMu sync.Mutex // one Reload at a time
	// loaded is the digest of the file content last tried, so WatchFile
	// reloads (and logs a broken file) once per change.
	loaded [sha256.Size]byte
}

// NewAuth builds an Auth from entries, validating each one (see LoadTokenFile).
// source names where the entries came from, for error messages.
func NewAuth(source string, entries []TokenEntry) (*Auth, error) {
	m, err := buildTable(source, entries)
	if err != nil {
		return nil, err
	}
	a := &Auth{now: time.Now}
	a.byHash.Store(&m)
	return a, nil
}

func buildTable(source string, entries []TokenEntry) (map[[sha256.Size]byte]Identity, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("gateway: %s: no tokens; add at least one entry under \"tokens\"", source)
	}
	m := make(map[[sha256.Size]byte]Identity, len(entries))
	for i, e := range entries {
		id, err := e.identity()
		if err != nil {
			return nil, fmt.Errorf("gateway: %s: token entry %d (principal %q): %w", source, i+1, e.Principal.ID, err)
		}
		h := sha256.Sum256([]byte(e.Token))
		id.tokenHash = h
		if _, dup := m[h]; dup {
			return nil, fmt.Errorf("gateway: %s: token entry %d (principal %q): the same token appears twice; every token must be unique", source, i+1, e.Principal.ID)
		}
		m[h] = id
	}
	return m, nil
}

func (e TokenEntry) identity() (Identity, error) {
	if e.Token == "" {
		return Identity{}, errors.New("token is empty")
	}
	if len(e.Token) < MinTokenLen {
		return Identity{}, fmt.Errorf("token is %d characters; use at least %d random characters", len(e.Token), MinTokenLen)
	}
	if strings.TrimSpace(e.Token) != e.Token || strings.ContainsAny(e.Token, " \t\r\n") {
		return Identity{}, errors.New("token contains whitespace, which an Authorization header cannot carry")
	}
	p := actor.Principal{ID: e.Principal.ID, Type: actor.PrincipalType(e.Principal.Type)}
	if err := p.Validate(); err != nil {
		return Identity{}, fmt.Errorf("principal: %s", rejectionText(err))
	}
	role := Role(e.Role)
	switch role {
	case "":
		role = RoleTenant
		if p.Type == actor.PrincipalSystem {
			role = RoleSystem
		}
	case RoleTenant:
		if p.Type == actor.PrincipalSystem {
			return Identity{}, errors.New("role tenant is for principal types user, service, agent; a system principal takes role system")
		}
	case RoleSystem:
		if p.Type != actor.PrincipalSystem {
			return Identity{}, fmt.Errorf("role system needs principal type system, not %s", p.Type)
		}
	case RoleAdmin:
	default:
		return Identity{}, fmt.Errorf("role %q is not one of tenant, system, admin", e.Role)
	}
	var notAfter time.Time
	if e.NotAfter != "" {
		t, err := time.Parse(time.RFC3339, e.NotAfter)
		if err != nil {
			return Identity{}, fmt.Errorf("not_after %q is not an RFC 3339 time, e.g. 2027-01-31T00:00:00Z", e.NotAfter)
		}
		notAfter = t
	}
	// An admin token may hold no scopes: it runs the cluster without
	// touching any tenant's data.
	if len(e.Scopes) == 0 && role != RoleAdmin {
		return Identity{}, errors.New(`no scopes; add at least one {"tenant": "...", "workspace": "*"}`)
	}
	id := Identity{Principal: p, Scopes: make([]actor.Scope, 0, len(e.Scopes)), Role: role, NotAfter: notAfter}
	for j, s := range e.Scopes {
		if err := actor.ValidateID("tenant", s.Tenant); err != nil {
			return Identity{}, fmt.Errorf("scope %d: %s", j+1, rejectionText(err))
		}
		if s.Workspace != "*" {
			if err := actor.ValidateID("workspace", s.Workspace); err != nil {
				return Identity{}, fmt.Errorf("scope %d: %s (use \"*\" for every workspace of the tenant)", j+1, rejectionText(err))
			}
		}
		id.Scopes = append(id.Scopes, actor.Scope{Tenant: s.Tenant, Workspace: s.Workspace})
	}
	if len(id.Scopes) > 0 {
		id.DefaultScope = id.Scopes[0]
		if id.DefaultScope.Workspace == "*" {
			id.DefaultScope.Workspace = DefaultWorkspace
		}
	}
	return id, nil
}

// LoadTokenFile reads and validates a token file. YAML is accepted for files
// named *.yaml or *.yml; anything else is parsed as JSON. Unknown fields are
// refused so that a misspelt "scopes" is an error rather than a token that
// silently has no rights. The Auth remembers path for Reload and WatchFile.
func LoadTokenFile(path string) (*Auth, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gateway: read token file: %w", err)
	}
	m, err := parseTokenFile(path, data)
	if err != nil {
		return nil, err
	}
	a := &Auth{path: path, now: time.Now, loaded: sha256.Sum256(data)}
	a.byHash.Store(&m)
	return a, nil
}

func parseTokenFile(path string, data []byte) (map[[sha256.Size]byte]Identity, error) {
	var f TokenFile
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("gateway: token file %s: %w", path, err)
		}
	default:
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("gateway: token file %s: not valid JSON (name it *.yaml for YAML): %w", path, err)
		}
	}
	return buildTable("token file "+path, f.Tokens)
}

// Reload reads the token file again and, if it is valid, replaces every
// token at once: calls authenticated from then on see the new file. A file
// that does not load leaves the current tokens in place and is returned as
// the error.
func (a *Auth) Reload() error {
	if a.path == "" {
		return errors.New("gateway: these tokens did not come from a file; nothing to reload")
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	data, err := os.ReadFile(a.path)
	if err != nil {
		return fmt.Errorf("gateway: read token file: %w", err)
	}
	return a.install(data)
}

// install parses data as the token file and swaps it in; reloadMu is held.
func (a *Auth) install(data []byte) error {
	a.loaded = sha256.Sum256(data)
	m, err := parseTokenFile(a.path, data)
	if err != nil {
		return err
	}
	a.byHash.Store(&m)
	return nil
}

// DefaultTokenPoll is how often WatchFile looks at the token file.
const DefaultTokenPoll = 2 * time.Second

// WatchFile reloads the token file whenever its content changes, looking
// every interval until ctx ends (polling: a file watcher is not a
// dependency, and a token file is small). A broken new file keeps the
// current tokens and is logged once per change.
func (a *Auth) WatchFile(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if a.path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastReadErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(a.path)
		if err != nil {
			// Editors replace files by rename; a missing file for a moment
			// is not a reason to drop the tokens.
			if err.Error() != lastReadErr {
				log.Warn("token file unreadable; keeping the previous tokens", "path", a.path, "err", err)
				lastReadErr = err.Error()
			}
			continue
		}
		lastReadErr = ""
		a.reloadMu.Lock()
		if sha256.Sum256(data) == a.loaded {
			a.reloadMu.Unlock()
			continue
		}
		err = a.install(data)
		n := len(*a.byHash.Load())
		a.reloadMu.Unlock()
		if err != nil {
			log.Error("token file changed but does not load; keeping the previous tokens", "path", a.path, "err", err)
			continue
		}
		log.Info("token file reloaded", "path", a.path, "tokens", n)
	}
}

// GenerateDevTokenFile writes a token file at path holding one fresh random
// token (32 bytes, hex) for principal {id "dev", type "user"} with scope
// {tenant, "*"}, and returns the token. The file is created with mode 0600
// (it holds a secret) and replaces any file at path.
func GenerateDevTokenFile(path string, tenant string) (token string, err error) {
	if err := actor.ValidateID("tenant", tenant); err != nil {
		return "", fmt.Errorf("gateway: dev token: %s", rejectionText(err))
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("gateway: dev token: %w", err)
	}
	token = hex.EncodeToString(raw[:])
	f := TokenFile{Tokens: []TokenEntry{{
		Token:     token,
		Principal: TokenPrincipal{ID: "dev", Type: string(actor.PrincipalUser)},
		Scopes:    []TokenScope{{Tenant: tenant, Workspace: "*"}},
	}}}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return "", err
	}
	data = append(data, '\n')
	// Write to a temporary file and rename, so a crash never leaves a
	// half-written token file that the next start would refuse.
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tokens-*")
	if err != nil {
		return "", fmt.Errorf("gateway: dev token: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("gateway: dev token: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", fmt.Errorf("gateway: dev token: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("gateway: dev token: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("gateway: dev token: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("gateway: dev token: %w", err)
	}
	return token, nil
}

// Authenticate returns the identity of token. The errors are gRPC statuses
// with code Unauthenticated whose messages say what to do.
func (a *Auth) Authenticate(token string) (Identity, error) {
	if token == "" {
		return Identity{}, status.Error(codes.Unauthenticated, "missing bearer token: send the header Authorization: Bearer <token>")
	}
	h := sha256.Sum256([]byte(token))
	id, ok := (*a.byHash.Load())[h]
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "unknown token")
	}
	if !id.NotAfter.IsZero() && a.now().After(id.NotAfter) {
		return Identity{}, status.Errorf(codes.Unauthenticated, "token expired at %s", id.NotAfter.UTC().Format(time.RFC3339))
	}
	return id, nil
}

// recheck returns the current identity of the token id was authenticated
// from, as Authenticate would now: a reload may have removed or changed the
// token, and it may have expired since. It costs one map lookup, so a
// long-lived stream can call it per message.
func (a *Auth) recheck(id Identity) (Identity, error) {
	cur, ok := (*a.byHash.Load())[id.tokenHash]
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "unknown token (it was removed since the stream opened)")
	}
	if !cur.NotAfter.IsZero() && a.now().After(cur.NotAfter) {
		return Identity{}, status.Errorf(codes.Unauthenticated, "token expired at %s", cur.NotAfter.UTC().Format(time.RFC3339))
	}
	return cur, nil
}

// rejectionText returns the message of an actor.Rejection without its
// "invalid: " prefix, or err's text.
func rejectionText(err error) string {
	if r, ok := actor.AsRejection(err); ok {
		return r.Message
	}
	return err.Error()
}
