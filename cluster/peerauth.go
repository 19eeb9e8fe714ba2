package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// Node-to-node gRPC calls authenticate with a MAC per call, not with the
// cluster secret: the "authorization" value is
//
//	Rhizon-Peer ts=<unix ms>,nonce=<32 hex>,mac=<hex HMAC-SHA256>
//
// where the MAC, under a key derived from the secret for this use only,
// covers the full method name, ts and nonce. The secret itself never
// crosses the wire (without TLS the calls are in clear), and a captured
// value works only for that method and within peerCallSkew of ts.
const (
	peerScheme   = "Rhizon-Peer"
	peerCallSkew = 30 * time.Second
)

var errPeerAuth = errors.New("missing, malformed, stale or wrong peer MAC")

// internalKey derives the internal API's key from the cluster secret, like
// the Raft mux and gossip keys are (raftmux, membership.Key): knowing it reveals neither the secret
// nor another purpose's key.
func internalKey(secret string) []byte {
	h := hmac.New(sha256.New, []byte("rhizon internal grpc v1"))
	h.Write([]byte(secret))
	return h.Sum(nil)
}

func peerMAC(key []byte, method string, ts int64, nonce string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(ts, 10)))
	h.Write([]byte{0})
	h.Write([]byte(nonce))
	return h.Sum(nil)
}

func peerAuthValue(key []byte, method string, at time.Time, nonce string) string {
	ts := at.UnixMilli()
	return peerScheme + " ts=" + strconv.FormatInt(ts, 10) + ",nonce=" + nonce + ",mac=" + hex.EncodeToString(peerMAC(key, method, ts, nonce))
}

// peerCreds sign each call of a node to a peer.
type peerCreds struct{ key []byte }

func (c peerCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok {
		return nil, errors.New("cluster: peer credentials without request info")
	}
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return nil, err
	}
	return map[string]string{"authorization": peerAuthValue(c.key, ri.Method, time.Now(), hex.EncodeToString(n[:]))}, nil
}

func (peerCreds) RequireTransportSecurity() bool { return false }

// checkPeerAuth verifies the MAC of an incoming internal call.
func checkPeerAuth(ctx context.Context, key []byte, now time.Time) error {
	method, ok := grpc.Method(ctx)
	if !ok {
		return errPeerAuth
	}
	for _, v := range metadata.ValueFromIncomingContext(ctx, "authorization") {
		rest, ok := strings.CutPrefix(v, peerScheme+" ")
		if !ok {
			continue
		}
		var ts int64 = -1
		var nonce, mac string
		for _, kv := range strings.Split(rest, ",") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "ts":
				if n, err := strconv.ParseInt(val, 10, 64); err == nil {
					ts = n
				}
			case "nonce":
				nonce = val
			case "mac":
				mac = val
			}
		}
		got, err := hex.DecodeString(mac)
		if ts < 0 || len(nonce) != 32 || err != nil {
			continue
		}
		if d := now.Sub(time.UnixMilli(ts)); d > peerCallSkew || d < -peerCallSkew {
			continue
		}
		if hmac.Equal(got, peerMAC(key, method, ts, nonce)) {
			return nil
		}
	}
	return errPeerAuth
}
