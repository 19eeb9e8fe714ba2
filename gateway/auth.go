package gateway

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

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
//	            "scopes":[{"tenant":"dev","workspace":"*"}]}]}
type TokenFile struct {
	Tokens []TokenEntry `json:"tokens" yaml:"tokens"`
}

// TokenEntry binds one bearer token to the principal it authenticates and the
// scopes that principal may act in. The first scope is the default one.
type TokenEntry struct {
	Token     string         `json:"token" yaml:"token"`
	Principal TokenPrincipal `json:"principal" yaml:"principal"`
	Scopes    []TokenScope   `json:"scopes" yaml:"scopes"`
}

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

// Auth verifies bearer tokens. It is immutable after construction and safe
// for concurrent use.
type Auth struct {
	// byHash is keyed by sha256(token): a lookup compares digests, never the
	// secret itself, so response timing reveals nothing about how much of a
	// guessed token was right (a digest prefix is of no use to an attacker).
	byHash map[[sha256.Size]byte]Identity
}

// NewAuth builds an Auth from entries, validating each one (see LoadTokenFile).
// source names where the entries came from, for error messages.
func NewAuth(source string, entries []TokenEntry) (*Auth, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("gateway: %s: no tokens; add at least one entry under \"tokens\"", source)
	}
	a := &Auth{byHash: make(map[[sha256.Size]byte]Identity, len(entries))}
	for i, e := range entries {
		id, err := e.identity()
		if err != nil {
			return nil, fmt.Errorf("gateway: %s: token entry %d (principal %q): %w", source, i+1, e.Principal.ID, err)
		}
		h := sha256.Sum256([]byte(e.Token))
		if _, dup := a.byHash[h]; dup {
			return nil, fmt.Errorf("gateway: %s: token entry %d (principal %q): the same token appears twice; every token must be unique", source, i+1, e.Principal.ID)
		}
		a.byHash[h] = id
	}
	return a, nil
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
	if len(e.Scopes) == 0 {
		return Identity{}, errors.New(`no scopes; add at least one {"tenant": "...", "workspace": "*"}`)
	}
	id := Identity{Principal: p, Scopes: make([]actor.Scope, 0, len(e.Scopes))}
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
	id.DefaultScope = id.Scopes[0]
	if id.DefaultScope.Workspace == "*" {
		id.DefaultScope.Workspace = DefaultWorkspace
	}
	return id, nil
}

// LoadTokenFile reads and validates a token file. YAML is accepted for files
// named *.yaml or *.yml; anything else is parsed as JSON. Unknown fields are
// refused so that a misspelt "scopes" is an error rather than a token that
// silently has no rights.
func LoadTokenFile(path string) (*Auth, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gateway: read token file: %w", err)
	}
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
	return NewAuth("token file "+path, f.Tokens)
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
	id, ok := a.byHash[h]
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "unknown token")
	}
	return id, nil
}

// rejectionText returns the message of an actor.Rejection without its
// "invalid: " prefix, or err's text.
func rejectionText(err error) string {
	if r, ok := actor.AsRejection(err); ok {
		return r.Message
	}
	return err.Error()
}
