package cluster

import (
	"time"

	"google.golang.org/grpc/credentials"
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
