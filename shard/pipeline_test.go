package shard

import (
	"testing"
	"time"
)

// waitResult runs p.wait in a goroutine and returns its channel.
func waitResult(p *pipeline, stop chan struct{}) chan bool {
	res := make(chan bool, 1)
	go func() { res <- p.wait(stop) }()
	return res
}

// An entry in flight that does not land within stallFactor round trips no
// longer holds the queued commands back: the proposer lets them go in an
// entry of their own (before, it waited for the landing however long).
func TestPipelineWaitEndsOnStall(t *testing.T) {
	p := &pipeline{landed: make(chan struct{}, 1)}
	p.observe(5 * time.Millisecond)
	p.cmds.Add(pipelineBelow) // busy, and nothing lands
	start := time.Now()
	select {
	case ok := <-waitResult(p, make(chan struct{})):
		if !ok {
			t.Fatal("wait reported a stop")
		}
		if d := time.Since(start); d < p.stallAfter() {
			t.Fatalf("wait returned after %v, before the stall bound %v", d, p.stallAfter())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait still blocked 5 s after the stall bound (10 ms): the stalled entry holds the queue")
	}
}

// Under the bound, a landing that leaves the pipeline not busy ends the wait,
// and a stop ends it with false.
func TestPipelineWaitLandingAndStop(t *testing.T) {
	p := &pipeline{landed: make(chan struct{}, 1)}
	p.observe(time.Hour) // no stall bound within the test
	p.cmds.Add(pipelineBelow)
	res := waitResult(p, make(chan struct{}))
	p.done(pipelineBelow)
	select {
	case ok := <-res:
		if !ok {
			t.Fatal("wait reported a stop")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not end when the entry landed")
	}

	p.cmds.Add(pipelineBelow)
	stop := make(chan struct{})
	res = waitResult(p, stop)
	close(stop)
	select {
	case ok := <-res:
		if ok {
			t.Fatal("wait ended without reporting the stop")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not end on stop")
	}
}

// The round-trip average follows the entries' times.
func TestPipelineObserve(t *testing.T) {
	p := &pipeline{}
	if got := p.stallAfter(); got != minStall {
		t.Fatalf("stallAfter with no round trip = %v, want %v", got, minStall)
	}
	p.observe(8 * time.Millisecond)
	for range 100 {
		p.observe(16 * time.Millisecond)
	}
	if got := p.stallAfter(); got < 30*time.Millisecond || got > 32*time.Millisecond {
		t.Fatalf("stallAfter = %v, want about 2 x 16 ms", got)
	}
}
