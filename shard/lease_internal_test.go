package shard

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestLease_QuorumOfAcksOfTheTermHoldsIt(t *testing.T) {
	l := newLease(time.Second)
	voters := []raft.ServerID{"a", "b", "c"}
	now := time.Now()
	if l.valid(1, "a", voters, now) {
		t.Fatal("lease with no ack")
	}
	l.acked("b", 1, now.Add(-900*time.Millisecond))
	if !l.valid(1, "a", voters, now) {
		t.Fatal("self + b within the lease: not valid")
	}
	if l.valid(1, "a", voters, now.Add(200*time.Millisecond)) {
		t.Fatal("valid past the ack's send time + lease")
	}
	if l.valid(2, "a", voters, now) {
		t.Fatal("acks of term 1 hold a lease in term 2")
	}
	// Five voters need two acks besides self; the older one counts.
	five := append(voters, "d", "e")
	l.acked("c", 1, now.Add(-100*time.Millisecond))
	if !l.valid(1, "a", five, now.Add(50*time.Millisecond)) || l.valid(1, "a", five, now.Add(150*time.Millisecond)) {
		t.Fatal("five voters: the lease must run from the second newest peer ack")
	}
	l.acked("b", 2, now)
	if l.valid(1, "a", voters, now) || !l.valid(2, "a", voters, now) {
		t.Fatal("a newer term's ack must reset the lease to that term")
	}
	l.transferring(2)
	if l.valid(2, "a", voters, now) {
		t.Fatal("lease valid after a transfer started")
	}
}

func TestLease_ReplicaVotesForNoOneInItsFirstHeartbeatTimeout(t *testing.T) {
	_, a := raft.NewInmemTransport("a")
	_, b := raft.NewInmemTransport("b")
	a.Connect("b", b)
	lt := newLeaseTransport(b, newLease(time.Second), time.Hour)
	defer lt.stop()
	_ = lt.Consumer()
	var resp raft.RequestVoteResponse
	err := a.RequestVote("b", "b", &raft.RequestVoteRequest{Term: 5, RPCHeader: raft.RPCHeader{ID: []byte("a"), Addr: []byte("a")}}, &resp)
	if err == nil || !errors.Is(err, errVoteQuiet) && err.Error() != errVoteQuiet.Error() {
		t.Fatalf("vote during the quiet period: err %v, granted %v", err, resp.Granted)
	}
	var tn raft.TimeoutNowResponse
	err = a.TimeoutNow("b", "b", &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: []byte("a")}}, &tn)
	if err == nil || err.Error() != errTimeoutNowNotLeader.Error() {
		t.Fatalf("TimeoutNow from a server that is not the known leader: err %v", err)
	}
}

// beatTransport keeps the heartbeat handler Raft sets, to call it as the
// transport's connection goroutine would.
type beatTransport struct {
	raft.Transport
	cb func(raft.RPC)
}

func (b *beatTransport) SetHeartbeatHandler(cb func(raft.RPC)) { b.cb = cb }

// A heartbeat in Raft's fast path when the shard closes must finish before
// stop returns (the caller closes the stores next), and later ones must not
// reach Raft: CI saw a heartbeat write the term into a closed store.
func TestLease_StopWaitsForHeartbeatsInFlightAndRefusesLater(t *testing.T) {
	under := &beatTransport{}
	lt := newLeaseTransport(under, newLease(time.Second), time.Second)
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	lt.SetHeartbeatHandler(func(rpc raft.RPC) {
		entered <- struct{}{}
		<-release
		rpc.Respond(&raft.AppendEntriesResponse{}, nil)
	})
	beat := func() chan raft.RPCResponse {
		resp := make(chan raft.RPCResponse, 1)
		go under.cb(raft.RPC{Command: &raft.AppendEntriesRequest{}, RespChan: resp})
		return resp
	}
	first := beat()
	<-entered
	stopped := make(chan struct{})
	go func() { lt.stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned while a heartbeat was still in Raft's handler")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-stopped
	if r := <-first; r.Error != nil {
		t.Fatalf("the heartbeat in flight: %v", r.Error)
	}
	if r := <-beat(); !errors.Is(r.Error, raft.ErrRaftShutdown) {
		t.Fatalf("a heartbeat after stop: %v, want ErrRaftShutdown", r.Error)
	}
	if len(entered) != 0 {
		t.Fatal("a heartbeat after stop reached Raft's handler")
	}
}
