package natsserver

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rhizon/rhizon/api/stream"
)

// NATS accounts of the embedded servers (with a cluster secret). The nodes
// and operators' tools are in NodeAccount, which holds the streams. Each
// producer token has an account of its own: its connections see only their
// own subjects (their _INBOX.> is theirs alone), may publish only commands,
// and their commands land on a stream of their own in the node account,
// where the node knows which token sent them. SystemAccount is NATS's
// system account; nobody logs in to it.
const (
	NodeAccount   = "RHIZON"
	SystemAccount = "SYS"
)

// ProducerLimits bound each producer account's connections.
type ProducerLimits struct {
	// MaxConnections per producer token, over all of its connections to
	// this server (default 64).
	MaxConnections int
	// MaxSubscriptions per producer token (default 1024): its
	// acknowledgement inboxes.
	MaxSubscriptions int
}

func (l *ProducerLimits) setDefaults() {
	if l.MaxConnections <= 0 {
		l.MaxConnections = 64
	}
	if l.MaxSubscriptions <= 0 {
		l.MaxSubscriptions = 1024
	}
}

// accountsConfig is the NATS configuration of the accounts, as an operator
// would write it: the node account with JetStream, exporting to each
// producer account the subjects of its own commands; each producer account
// mapping rhizon.in.<shard> there, with its limits.
func accountsConfig(accounts []string, l ProducerLimits) string {
	var b strings.Builder
	fmt.Fprintf(&b, "system_account: %s\naccounts: {\n  %s: {}\n  %s: {\n    jetstream: enabled\n    exports: [\n", SystemAccount, SystemAccount, NodeAccount)
	for _, a := range accounts {
		fmt.Fprintf(&b, "      {service: %q, accounts: [%s]}\n", stream.ProducerPrefix+a+".*", a)
	}
	b.WriteString("    ]\n  }\n")
	for _, a := range accounts {
		fmt.Fprintf(&b, "  %s: {\n", a)
		fmt.Fprintf(&b, "    limits: {max_connections: %d, max_subscriptions: %d, max_payload: %d}\n",
			l.MaxConnections, l.MaxSubscriptions, stream.MaxCommandBytes)
		fmt.Fprintf(&b, "    mappings: {%q: %q}\n", stream.IngressPrefix+"*", stream.ProducerPrefix+a+".{{wildcard(1)}}")
		fmt.Fprintf(&b, "    imports: [{service: {account: %s, subject: %q}}]\n", NodeAccount, stream.ProducerPrefix+a+".*")
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// clientAuth authenticates the embedded server's clients: the node user by
// its password, a producer by its bearer token (as the NATS token, or as the
// password with any user name). Everyone else is refused: there is no
// anonymous user.
type clientAuth struct {
	nodePass  string
	producers map[[sha256.Size]byte]string // sha256(token) -> account
	srv       atomic.Pointer[server.Server]
}

func newClientAuth(secret string, tokens []string) (*clientAuth, []string) {
	_, pass := NodeCredentials(secret)
	a := &clientAuth{nodePass: pass, producers: map[[sha256.Size]byte]string{}}
	var names []string
	for _, t := range tokens {
		h := sha256.Sum256([]byte(t))
		if _, dup := a.producers[h]; dup || t == "" {
			continue
		}
		name := stream.ProducerAccount(t)
		a.producers[h] = name
		names = append(names, name)
	}
	sort.Strings(names)
	return a, names
}

// Check implements server.Authentication.
func (a *clientAuth) Check(c server.ClientAuthentication) bool {
	s := a.srv.Load()
	if s == nil || c.Kind() != server.CLIENT {
		return false
	}
	o := c.GetOpts()
	if o.Username == NodeUser {
		if subtle.ConstantTimeCompare([]byte(o.Password), []byte(a.nodePass)) != 1 {
			return false
		}
		acc, err := s.LookupAccount(NodeAccount)
		if err != nil {
			return false
		}
		c.RegisterUser(&server.User{Username: NodeUser, Account: acc})
		return true
	}
	tok := o.Token
	if tok == "" {
		tok = o.Password
	}
	if tok == "" {
		return false
	}
	// Keyed by digest: a lookup never compares the token itself.
	name, ok := a.producers[sha256.Sum256([]byte(tok))]
	if !ok {
		return false
	}
	acc, err := s.LookupAccount(name)
	if err != nil {
		return false
	}
	c.RegisterUser(&server.User{Username: name, Account: acc, Permissions: &server.Permissions{
		// NATS checks the subject after the account's mapping too.
		Publish:   &server.SubjectPermission{Allow: []string{stream.IngressPrefix + "*", stream.ProducerPrefix + name + ".*"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}})
	return true
}
