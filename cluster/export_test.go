package cluster

import (
	"context"
	"time"

	"google.golang.org/grpc/credentials"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// PeerAuthHeader is the authorization value a node holding secret sends on
// a call of method at time at.
func PeerAuthHeader(secret, method string, at time.Time) string {
	return peerAuthValue(internalKey(secret), method, at, "00112233445566778899aabbccddeeff")
}

// PeerCredentials are the per-call credentials the nodes call each other
// with.
func PeerCredentials(secret string) credentials.PerRPCCredentials {
	return peerCreds{key: internalKey(secret)}
}

// HoldReplay takes shard id's replay slot on n, as a running replay does,
// until release is called.
func (n *Node) HoldReplay(id uint32) (release func(), err error) {
	if err := n.replays.enter(n.cfg.NodeID, id); err != nil {
		return nil, err
	}
	return func() { n.replays.leave(id) }, nil
}

// ForwardStreamsOpened is how many ForwardStreams n has opened to each
// peer, by address.
func (n *Node) ForwardStreamsOpened() map[string]uint64 {
	n.peers.mu.Lock()
	defer n.peers.mu.Unlock()
	out := map[string]uint64{}
	for a, c := range n.peers.conns { //rhizon:deterministic a copy
		out[a] = c.fwd.Opened()
	}
	return out
}

// ForwardTo forwards cmd to node to once, as the router does, and returns
// the leader the answer named and the answer's error, classified.
func (n *Node) ForwardTo(ctx context.Context, to string, cmd *pb.Command) (leader string, applied bool, err error) {
	rt := n.router
	_, fe := callPeer(ctx, rt, rt.groupOf(cmd.GetAddress().ToActor()), to, "submit", pb.InternalClient.Forward, &pb.ForwardRequest{Command: cmd, Hops: 1})
	if fe == nil {
		return "", true, nil
	}
	return fe.leader, fe.applied, fe.err
}

// SetUnaryForwards makes n forward by the unary Forward, or by its
// ForwardStreams again (benchmarks compare the two).
func (n *Node) SetUnaryForwards(on bool) { n.peers.unary.Store(on) }

// StateMemTableSize is the memtable size n's state database opened with.
func (n *Node) StateMemTableSize() int64 { return n.state.MemTableSize() }
