package cluster_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/cluster"
)

// Node-to-node gRPC no longer accepts the raw cluster secret as a bearer
// token: a peer proves the secret with a per-call MAC, under a key derived
// for this purpose only, over the method and a fresh timestamp, so a
// captured header is neither the secret nor a lasting credential (issue 24
// item 11).
func TestInternalAPI_PeerCallMAC(t *testing.T) {
	tn := startNode(t, t.TempDir(), 2)
	conn, err := grpc.NewClient(tn.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ic := pb.NewInternalClient(conn)
	const method = "/rhizon.v1.Internal/LocalStatus"
	call := func(authz string) error {
		c := ctx(t)
		if authz != "" {
			c = metadata.AppendToOutgoingContext(c, "authorization", authz)
		}
		_, err := ic.LocalStatus(c, &pb.StatusRequest{})
		return err
	}
	for name, authz := range map[string]string{
		"none":                       "",
		"raw secret":                 "Bearer test-secret",
		"wrong secret":               cluster.PeerAuthHeader("other-secret", method, time.Now()),
		"another method's MAC":       cluster.PeerAuthHeader("test-secret", "/rhizon.v1.Internal/ShardAdmin", time.Now()),
		"a header a minute old":      cluster.PeerAuthHeader("test-secret", method, time.Now().Add(-time.Minute)),
		"a header a minute from now": cluster.PeerAuthHeader("test-secret", method, time.Now().Add(time.Minute)),
	} {
		if err := call(authz); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
	if err := call(cluster.PeerAuthHeader("test-secret", method, time.Now())); err != nil {
		t.Fatalf("a fresh MAC of the derived key: %v", err)
	}
	// What the nodes themselves send.
	c2, err := grpc.NewClient(tn.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(cluster.PeerCredentials("test-secret")))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewInternalClient(c2).LocalStatus(cctx, &pb.StatusRequest{}); err != nil {
		t.Fatalf("peer credentials: %v", err)
	}
}
