// Package peer names the systems Rhizon is compared with and where their
// servers listen: the kinds, the cluster size and the ports of a cluster
// (Layout). It links no server, so that `rhizon bench`'s load generator
// can plan a peer cluster without linking etcd's or NATS's; the servers
// themselves are started by bench/peer/peerserver, which only `rhizon
// bench-peer` links.
package peer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
)

// Kinds of peer clusters.
const (
	// KindEtcd is a 3-member etcd v3.7.3 cluster (embedded server): every
	// write is committed by a quorum with the WAL fsynced before the ack.
	KindEtcd = "etcd"
	// KindJetStreamKV is 3 clustered nats-server v2.15.2 servers with
	// their default fsync: JetStream acknowledges a write once a quorum
	// holds it, and flushes to disk every 2 minutes.
	KindJetStreamKV = "jetstream-kv"
	// KindJetStreamKVSync is KindJetStreamKV with SyncAlways on every
	// server: each write is fsynced before it counts.
	KindJetStreamKVSync = "jetstream-kv-sync"
)

// Kinds lists every kind Start knows.
var Kinds = []string{KindEtcd, KindJetStreamKV, KindJetStreamKVSync}

// Replicas is the size of every peer cluster: the same replication as a
// Rhizon shard.
const Replicas = 3

// Layout is where the servers of one cluster listen. It is chosen before
// any server starts, because each must know its peers' addresses; the
// parent of one-process-per-server passes it to every child.
type Layout struct {
	Kind string `json:"kind"`
	// PeerPorts are the servers' replication ports (etcd's peer URLs,
	// NATS's cluster routes), ClientPorts their client ports, both on
	// 127.0.0.1 and indexed by server.
	PeerPorts   []int `json:"peer_ports"`
	ClientPorts []int `json:"client_ports"`
}

// NewLayout picks free loopback ports for a cluster of kind.
func NewLayout(kind string) (Layout, error) {
	if !slices.Contains(Kinds, kind) {
		return Layout{}, fmt.Errorf("peer: unknown kind %q (known: %s)", kind, strings.Join(Kinds, ", "))
	}
	ports, err := freePorts(2 * Replicas)
	if err != nil {
		return Layout{}, err
	}
	return Layout{Kind: kind, PeerPorts: ports[:Replicas], ClientPorts: ports[Replicas:]}, nil
}

// Check tells whether l is a layout of a known kind with a port pair for
// each of the Replicas servers, and i one of them.
func (l Layout) Check(i int) error {
	if !slices.Contains(Kinds, l.Kind) {
		return fmt.Errorf("peer: unknown kind %q (known: %s)", l.Kind, strings.Join(Kinds, ", "))
	}
	if len(l.PeerPorts) != Replicas || len(l.ClientPorts) != Replicas {
		return fmt.Errorf("peer: layout has %d peer and %d client ports, want %d each", len(l.PeerPorts), len(l.ClientPorts), Replicas)
	}
	if i < 0 || i >= Replicas {
		return fmt.Errorf("peer: server %d of %d", i, Replicas)
	}
	return nil
}

// ServerName names server i of a cluster of kind (its etcd member or NATS
// server name, and its data directory's).
func ServerName(kind string, i int) string {
	if kind == KindEtcd {
		return fmt.Sprintf("m%d", i+1)
	}
	return fmt.Sprintf("n%d", i+1)
}

// AddrInUse tells a lost race for a port from other failures. etcd does
// not always wrap the listener's error, so its text is checked too.
func AddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// picked below the kernel's ephemeral range: a port in that range, once
// closed, can be taken by any port-0 listener or outgoing connection (a
// NATS server's own client port once took another's route port) before
// its server binds it.
func freePorts(n int) ([]int, error) {
	lo, hi := 20000, 32000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var eph int
		if _, err := fmt.Sscan(string(b), &eph); err == nil && eph > lo+2000 {
			hi = eph
		}
	}
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			return nil, fmt.Errorf("peer: no %d free ports in 127.0.0.1:%d-%d", n, lo, hi-1)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo)))
		if err != nil {
			continue // taken; the open listeners keep the chosen ones distinct
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
