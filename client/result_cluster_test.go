package client

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// GetResult on a 3-node cluster through one node without leader routing:
// the reads of shards another node leads are forwarded (the internal Read
// carries the key), and every stored result comes back as Submit answered
// it, rejections included; an unknown key is NotFound wherever its shard is.
func TestGetResult_ForwardedToTheShardLeader(t *testing.T) {
	tc := startCluster(t)
	c, err := Dial(tc.Nodes[0].Addr, WithToken(clusterToken), WithLeaderRouting(false), WithRetries(10),
		WithRetryBackoff(10*time.Millisecond, 300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	type sent struct {
		addr *pb.Address
		key  string
		res  *pb.Result
	}
	var all []sent
	for _, e := range entities(clusterShards) {
		addr := &pb.Address{ActorType: "counter", EntityId: e}
		for i, expected := range []*uint64{nil, new(uint64)} { // the second conflicts: the entity is at 1
			key := fmt.Sprintf("%s-k%d", e, i)
			resp, err := c.Submit(t.Context(), &pb.SubmitRequest{Address: addr, Type: "cmd.counter.add",
				Payload: []byte(`{"amount":1}`), IdempotencyKey: key, ExpectedVersion: expected})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, sent{addr, key, resp.GetResult()})
		}
	}
	before := tc.forwarded() // the reads' forwards only
	for _, s := range all {
		got, err := c.GetResult(t.Context(), &pb.GetResultRequest{Address: s.addr, IdempotencyKey: s.key})
		if err != nil {
			t.Fatalf("GetResult %s %s: %v", s.addr.EntityId, s.key, err)
		}
		r := got.GetResult()
		if r.GetStatus() != s.res.GetStatus() || r.GetCode() != s.res.GetCode() || r.GetVersion() != s.res.GetVersion() ||
			r.GetCommandId() != s.res.GetCommandId() || len(r.GetEvents()) != len(s.res.GetEvents()) ||
			(len(r.GetEvents()) > 0 && r.GetEvents()[0].GetId() != s.res.GetEvents()[0].GetId()) {
			t.Fatalf("GetResult %s %s: %v, Submit answered %v", s.addr.EntityId, s.key, r, s.res)
		}
		if _, err := c.GetResult(t.Context(), &pb.GetResultRequest{Address: s.addr, IdempotencyKey: s.key + "-never"}); status.Code(err) != codes.NotFound {
			t.Fatalf("GetResult of a key never sent: %v, want NotFound", err)
		}
	}
	if tc.forwarded() == before {
		t.Fatal("nothing was forwarded: the test did not cover the internal Read")
	}
	if all[1].res.GetCode() != "version_conflict" {
		t.Fatalf("second command: %v, want a conflict", all[1].res)
	}
}
