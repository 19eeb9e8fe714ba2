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
