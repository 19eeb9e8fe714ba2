package ingress_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/ingresstest"
	"github.com/rhizon/rhizon/internal/testkit"
)

// A poison message keeps a signed redrive record of the command as the
// ingress authenticated it; Redrive publishes that again (the producer's
// own forged record is dropped), a rejected one cannot be redriven, and a
// record signed under another key is refused.
func TestIngress_DeadLettersListAndRedrive(t *testing.T) {
	var key []byte
	e := ingresstest.Start(t, ingresstest.Options{Shards: 1, Tune: func(c *ingress.Config) {
		c.MaxDeliver = 2
		c.Backoff = []time.Duration{100 * time.Millisecond}
		c.Authenticate = func(tok string) (actor.Security, error) {
			if tok != producerToken {
				return actor.Security{}, fmt.Errorf("unknown token")
			}
			return producer, nil
		}
		key = c.SigningKey
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := e.Manager

	// A producer's command for an actor type the node lacks, claiming
	// another principal in its body and carrying a redrive record of its own.
	poison := addCmd("p", "poison")
	poison.Type, poison.Address.ActorType = "cmd.nosuch.add", "nosuch"
	poison.Principal = &pb.Principal{Id: "mallory", Type: "user"}
	data, _ := proto.Marshal(poison)
	pm := nats.NewMsg(stream.IngressSubject(0))
	pm.Data = data
	pm.Header.Set(stream.HeaderAuthorization, "Bearer "+producerToken)
	pm.Header.Set(stream.HeaderRedrive, base64.StdEncoding.EncodeToString(data))
	pm.Header.Set(stream.HeaderRedriveSignature, strings.Repeat("00", 32))
	if _, err := e.JS.PublishMsg(ctx, pm); err != nil {
		t.Fatal(err)
	}
	bad := nats.NewMsg(stream.IngressSubject(0))
	bad.Data = []byte("\xff\xfe not a command")
	bad.Header.Set(stream.HeaderAuthorization, "Bearer "+producerToken)
	if _, err := e.JS.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}

	var dls []stream.DeadLetter
	testkit.EventuallyNil(t, 20*time.Second, "two dead letters", func() error {
		var err error
		dls, _, err = m.DeadLetters(ctx, 0, 10)
		if err == nil && len(dls) != 2 {
			err = fmt.Errorf("%d dead letters", len(dls))
		}
		return err
	})
	byKind := map[string]stream.DeadLetter{}
	for _, d := range dls {
		byKind[d.Kind] = d
	}
	p, r := byKind["poison"], byKind["rejected"]
	if !p.Redrivable || !strings.Contains(string(p.Command), `"nosuch"`) || p.Shard != 0 || p.Size != len(data) {
		t.Fatalf("poison dead letter %+v", p)
	}
	if _, ok := p.Headers[stream.HeaderAuthorization]; ok {
		t.Fatal("a dead letter shows the producer's token")
	}
	if r.Redrivable || !strings.Contains(r.NotRedrivable, "rejected for good") || r.Command != nil {
		t.Fatalf("rejected dead letter %+v", r)
	}
	// Pages: one at a time.
	first, next, err := m.DeadLetters(ctx, 0, 1)
	if err != nil || len(first) != 1 || next != first[0].Sequence {
		t.Fatalf("first page %v next %d err %v", first, next, err)
	}
	rest, next, err := m.DeadLetters(ctx, next, 10)
	if err != nil || len(rest) != 1 || next != 0 || rest[0].Sequence == first[0].Sequence {
		t.Fatalf("second page %v next %d (want 0: the end) err %v", rest, next, err)
	}
	if more, _, err := m.DeadLetters(ctx, rest[0].Sequence, 10); err != nil || len(more) != 0 {
		t.Fatalf("past the end: %v %v", more, err)
	}

	if _, err := m.Redrive(ctx, r.Sequence); !errors.Is(err, stream.ErrNotRedrivable) {
		t.Fatalf("redrive of a rejected message: %v", err)
	}
	if _, err := m.Redrive(ctx, 999); !errors.Is(err, stream.ErrDeadLetterNotFound) {
		t.Fatalf("redrive of no message: %v", err)
	}

	// The redriven poison is taken as signed (not refused as
	// unauthenticated) and, its actor type still missing, dead-lettered
	// again as poison, with the producer's identity, not mallory's.
	enq, err := m.Redrive(ctx, p.Sequence)
	if err != nil || enq.Duplicate || enq.Stream != stream.IngressStream {
		t.Fatalf("redrive: %+v %v", enq, err)
	}
	if again, err := m.Redrive(ctx, p.Sequence); err != nil || !again.Duplicate {
		t.Fatalf("second redrive: %+v %v, want a duplicate", again, err)
	}
	var third stream.DeadLetter
	testkit.EventuallyNil(t, 20*time.Second, "the redriven command dead-lettered again", func() error {
		more, _, err := m.DeadLetters(ctx, rest[0].Sequence, 10)
		if err != nil {
			return err
		}
		if len(more) != 1 {
			return fmt.Errorf("%d new dead letters", len(more))
		}
		third = more[0]
		return nil
	})
	if third.Kind != "poison" || !third.Redrivable {
		t.Fatalf("redriven dead letter %+v", third)
	}
	var cmd struct {
		Principal struct{ ID string } `json:"principal"`
	}
	if err := json.Unmarshal(third.Command, &cmd); err != nil || cmd.Principal.ID != "producer" {
		t.Fatalf("redriven command %s (%v): want principal producer", third.Command, err)
	}

	// A record signed with the cluster's key redrives a command that
	// applies; one signed with another key does not.
	good := addCmd("redriven", "k1")
	good.Principal, good.Scopes = &pb.Principal{Id: "producer", Type: "service"}, []*pb.Scope{{Tenant: "t", Workspace: "w"}}
	good.Id = "cmd-redriven"
	for _, tc := range []struct {
		key     []byte
		applies bool
	}{{[]byte("another cluster's key"), false}, {key, true}} {
		data, _ := proto.Marshal(good)
		h := hmac.New(sha256.New, tc.key)
		h.Write([]byte("rhizon redrive v1\x00"))
		h.Write(data)
		dm := nats.NewMsg(stream.DeadSubject(0))
		dm.Data = data
		dm.Header.Set(stream.HeaderKind, "poison")
		dm.Header.Set(stream.HeaderRedrive, base64.StdEncoding.EncodeToString(data))
		dm.Header.Set(stream.HeaderRedriveSignature, hex.EncodeToString(h.Sum(nil)))
		ack, err := e.JS.PublishMsg(ctx, dm)
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Redrive(ctx, ack.Sequence)
		if !tc.applies {
			if !errors.Is(err, stream.ErrNotRedrivable) || !strings.Contains(err.Error(), "signature") {
				t.Fatalf("redrive of a record signed elsewhere: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	testkit.EventuallyNil(t, 20*time.Second, "redriven command applied", func() error {
		ent, _, err := e.Node.Get(ctx, actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "redriven"}, true)
		if err == nil && ent.Version != 1 {
			err = fmt.Errorf("version %d", ent.Version)
		}
		return err
	})
}
