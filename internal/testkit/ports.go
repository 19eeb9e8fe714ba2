package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Ports below Linux's ephemeral range (32768 and up): an outgoing
// connection cannot take a port from this range between FreePort's check
// and the server binding it, as it could take one that port 0 handed out.
const (
	portLow  = 20000
	portHigh = 32000
)

var (
	portsMu sync.Mutex
	used    = map[int]bool{}
)

// FreePort returns a port that is free on 127.0.0.1 for both TCP and UDP
// (gossip uses both), and never the same one twice in this process. Use it
// where a port must be known before the server starts, such as a flag of a
// child process or a cluster's join list; otherwise listen on port 0.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		port := portLow + rand.IntN(portHigh-portLow)
		if used[port] || !bindable(port) {
			continue
		}
		used[port] = true
		return port
	}
	t.Fatalf("no free port on 127.0.0.1 in %d tries", 200)
	return 0
}

// FreeAddr is FreePort as a "127.0.0.1:port" address.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

func bindable(port int) bool {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	if l.Close() != nil {
		return false
	}
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	return u.Close() == nil
}
