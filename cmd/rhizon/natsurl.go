package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/natsserver"
)

// natsURLCmd prints the embedded NATS servers' client URLs with the node
// credentials, which it derives from the cluster secret as the nodes do:
// what an operator's tool (or the bench's ingress workload) needs to read
// the events stream or manage the streams. Producers connect with their
// bearer token instead, each in an account of its own.
func natsURLCmd() *cobra.Command {
	var secret string
	var withTLS bool
	c := &cobra.Command{
		Use:   "nats-url [host:port,...]",
		Short: "Print the embedded NATS client URLs with the node credentials (derived from the cluster secret)",
		Long: "Print the embedded NATS servers' client URLs (default 127.0.0.1:4222) with the user and\n" +
			"password of the nodes, derived from --cluster-secret (RHIZON_CLUSTER_SECRET) as every node\n" +
			"derives them: the node account, which holds the streams. A producer connects with its\n" +
			"bearer token as the NATS token instead (nats://<token>@host:4222) and may only publish\n" +
			"commands to rhizon.in.<shard>, in an account of its own. Give a tool with these\n" +
			"credentials the nodes' inbox prefix " + stream.NodeInboxPrefix + "\n" +
			"(nats CLI: --inbox-prefix " + stream.NodeInboxPrefix + ").",
		Example: "  nats --server \"$(rhizon nats-url n1:4222)\" --inbox-prefix " + stream.NodeInboxPrefix + " stream ls",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := applyConfig(c.Flags()); err != nil {
				return &exitErr{exitUsage, err}
			}
			addrs := "127.0.0.1:4222"
			if len(args) == 1 {
				addrs = args[0]
			}
			urls, err := natsNodeURLs(secret, addrs, withTLS)
			if err != nil {
				return &exitErr{exitUsage, err}
			}
			fmt.Fprintln(c.OutOrStdout(), urls)
			return nil
		},
	}
	c.Flags().StringVar(&secret, "cluster-secret", "", "the nodes' --cluster-secret (RHIZON_CLUSTER_SECRET)")
	c.Flags().BoolVar(&withTLS, "tls", false, "tls:// URLs, for nodes started with --tls-cert")
	return c
}

// natsNodeURLs is addrs (host:port, comma-separated; a nats:// or tls://
// prefix is allowed) as NATS URLs carrying the node credentials, tls:// ones
// with withTLS.
func natsNodeURLs(secret, addrs string, withTLS bool) (string, error) {
	if secret == "" {
		return "", errors.New("--cluster-secret is required (or RHIZON_CLUSTER_SECRET): the credentials are derived from it")
	}
	user, pass := natsserver.NodeCredentials(secret)
	var out []string
	for a := range strings.SplitSeq(addrs, ",") {
		a = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(a), "nats://"), "tls://")
		if _, _, err := net.SplitHostPort(a); err != nil {
			return "", fmt.Errorf("NATS address %q: want host:port", a)
		}
		u := url.URL{Scheme: "nats", User: url.UserPassword(user, pass), Host: a}
		if withTLS {
			u.Scheme = "tls"
		}
		out = append(out, u.String())
	}
	return strings.Join(out, ","), nil
}
