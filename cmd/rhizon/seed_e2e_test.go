package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// seedResult is what `rhizon send -o json` prints, with what these tests read.
type seedResult struct {
	Accepted  bool            `json:"accepted"`
	Duplicate bool            `json:"duplicate"`
	Version   uint64          `json:"version"`
	Reply     json.RawMessage `json:"reply"`
	Events    []struct {
		Type    string          `json:"type"`
		At      int64           `json:"at"`
		Payload json.RawMessage `json:"payload"`
	} `json:"events"`
}

// seedReply is the reply of an idempotent delete or release.
type seedReply struct {
	Status  string `json:"status"`
	Existed bool   `json:"existed"` // kv
	Held    bool   `json:"held"`    // lock
}

func seedReplyOf(t *testing.T, r seedResult) seedReply {
	t.Helper()
	var v seedReply
	if err := json.Unmarshal(r.Reply, &v); err != nil {
		t.Fatalf("reply %q: %v", r.Reply, err)
	}
	return v
}

// seedSend runs `rhizon send` with -o json and decodes the result; it fails the
// test unless the exit status is want.
func (p *devProcess) seedSend(t *testing.T, want int, target, verb, payload string, args ...string) seedResult {
	t.Helper()
	out, code := p.rhizon(t, append([]string{"send", target, verb, payload, "-o", "json"}, args...)...)
	if code != want {
		t.Fatalf("send %s %s %s: exit %d, want %d; output %s", target, verb, payload, code, want, out)
	}
	return decode[seedResult](t, out)
}

// seedRhizonStderr runs the CLI against p and returns stderr and the exit code.
func (p *devProcess) seedRhizonStderr(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "RHIZON_ADDR="+p.addr, "RHIZON_TOKEN="+p.token)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("rhizon %v: %v", args, err)
	}
	return errb.String(), 0
}

// The original runtime's delete and release are idempotent: on `rhizon dev`
// a second kv delete and a release of a free lock are accepted, with no event
// and the version unchanged, and the answer is the same after a restart.
func TestSeed_DeleteTwiceAndReleaseFreeOnDev(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startDev(t, dir)
	seedSemantics(t, p)

	// Their results are stored like any other: after kill -9, resending
	// under the same keys answers them again.
	p.kill()
	seedResend(t, startDev(t, dir))
}

// The same on a 3-node cluster: every replica decides the no-op commands
// alike (equal state hashes), and after the node that took them is killed
// and restarted, resending through another node answers them again.
func TestSeed_DeleteTwiceAndReleaseFreeOn3Nodes(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	for _, n := range c.nodes {
		n.start(t)
	}
	n1, n2 := c.nodes[0], c.nodes[1]
	c.waitConverged(n1, 60*time.Second)
	seedSemantics(t, &devProcess{addr: n1.grpc, token: clusterToken})
	c.waitConverged(n2, 30*time.Second) // equal applied indexes and state hashes
	n1.kill()
	n1.start(t)
	seedResend(t, &devProcess{addr: n2.grpc, token: clusterToken})
	c.waitConverged(n1, 60*time.Second)
}

// seedSemantics sends the seed-shaped deletes, releases and lock names
// through p and checks the answers and what history recorded.
func seedSemantics(t *testing.T, p *devProcess) {
	t.Helper()
	if r := p.seedSend(t, 0, "kv/d1", "create", `{"doc":{"a":1}}`); r.Version != 1 {
		t.Fatalf("create: %+v", r)
	}
	if r := p.seedSend(t, 0, "kv/d1", "delete", `{}`); r.Version != 2 || len(r.Events) != 1 || r.Events[0].Type != "evt.kv.deleted" {
		t.Fatalf("first delete: %+v", r)
	}
	second := p.seedSend(t, 0, "kv/d1", "delete", `{}`, "--idempotency-key", "del-2")
	if !second.Accepted || second.Version != 2 || len(second.Events) != 0 || seedReplyOf(t, second) != (seedReply{Status: "deleted"}) {
		t.Fatalf("second delete: %+v, want accepted at version 2 with no event and the reply deleted", second)
	}
	if r := p.seedSend(t, 0, "kv/never", "delete", `{}`); !r.Accepted || r.Version != 0 || len(r.Events) != 0 {
		t.Fatalf("delete of a document never created: %+v", r)
	}

	// The default lease is 5 s of logical time; the original's names work.
	acq := p.seedSend(t, 0, "lock/l1", "acquire", `{"resource_id":"l1","owner_id":"w1"}`)
	var lease struct {
		Owner     string `json:"owner"`
		ExpiresAt int64  `json:"expires_at"`
	}
	if len(acq.Events) != 1 || json.Unmarshal(acq.Events[0].Payload, &lease) != nil ||
		lease.Owner != "w1" || lease.ExpiresAt != acq.Events[0].At+5000 {
		t.Fatalf("acquire without ttl_ms: %+v, want one event expiring 5000 ms after it", acq)
	}
	if r := p.seedSend(t, 0, "lock/l1", "release", `{"owner":"w1"}`); r.Version != 2 || len(r.Events) != 1 {
		t.Fatalf("release: %+v", r)
	}
	free := p.seedSend(t, 0, "lock/l1", "release", `{"owner_id":"w1","resource_id":"l1"}`, "--idempotency-key", "rel-2")
	if !free.Accepted || free.Version != 2 || len(free.Events) != 0 || seedReplyOf(t, free) != (seedReply{Status: "released"}) {
		t.Fatalf("release of a free lock: %+v, want accepted at version 2 with no event", free)
	}
	// resource_id names the lock: another id is refused as invalid, saying why.
	msg, code := p.seedRhizonStderr(t, "send", "lock/l1", "acquire", `{"resource_id":"l2","owner":"w1"}`)
	if code != exitError || !strings.Contains(msg, "InvalidArgument") || !strings.Contains(msg, `resource_id "l2" is not this lock's id "l1"`) {
		t.Fatalf("acquire with another resource_id: exit %d, stderr %q", code, msg)
	}

	// Nothing was recorded for the no-op commands: not an event, not a rejection.
	for target, want := range map[string]int{"kv/d1": 2, "lock/l1": 2} {
		out, code := p.rhizon(t, "history", target, "--rejections", "-o", "json")
		h := decode[struct {
			Records []json.RawMessage `json:"records"`
		}](t, out)
		if code != 0 || len(h.Records) != want {
			t.Fatalf("history %s: exit %d, %d records, want %d: %s", target, code, len(h.Records), want, out)
		}
	}
}

// seedResend resends the second delete and the free release of
// seedSemantics under their keys: duplicates answering the stored results.
func seedResend(t *testing.T, p *devProcess) {
	t.Helper()
	if r := p.seedSend(t, 0, "kv/d1", "delete", `{}`, "--idempotency-key", "del-2"); !r.Accepted || !r.Duplicate || r.Version != 2 || len(r.Events) != 0 {
		t.Fatalf("second delete resent after kill -9: %+v", r)
	}
	if r := p.seedSend(t, 0, "lock/l1", "release", `{"owner":"w1"}`, "--idempotency-key", "rel-2"); !r.Accepted || !r.Duplicate || r.Version != 2 || len(r.Events) != 0 {
		t.Fatalf("free release resent after kill -9: %+v", r)
	}
}
