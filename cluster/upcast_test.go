package cluster_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
	"github.com/rhizon/rhizon/replay"
)

// profile is an actor whose "named" event changed shape: version 1 held
// {"name": "First Last"}, version 2 holds {"first", "last"}. Its verb "set"
// emits version 2; "set_v1" still emits version 1, standing in for the
// events the previous code recorded. Upcast turns version 1 into 2.
type profileState struct {
	First string `json:"first"`
	Last  string `json:"last"`
}

type profileV2 struct {
	First string `json:"first"`
	Last  string `json:"last"`
}

func profileActor() actor.Behavior {
	return actor.Define(actor.Definition[profileState]{
		Name: "profile",
		Commands: map[string]actor.Handler[profileState]{
			"set": func(_ *actor.Context, _ *profileState, cmd *actor.Command) ([]actor.NewEvent, error) {
				var p profileV2
				if err := actor.DecodePayload(cmd, &p); err != nil {
					return nil, err
				}
				return []actor.NewEvent{{Name: "named", Payload: actor.MustJSON(p), SchemaVersion: 2}}, nil
			},
			"set_v1": func(_ *actor.Context, _ *profileState, cmd *actor.Command) ([]actor.NewEvent, error) {
				var p struct {
					Name string `json:"name"`
				}
				if err := actor.DecodePayload(cmd, &p); err != nil {
					return nil, err
				}
				return []actor.NewEvent{{Name: "named", Payload: actor.MustJSON(p)}}, nil
			},
		},
		Apply: func(s *profileState, ev *actor.Event) error {
			up, err := actor.UpcastEvent(profileActorNoState, *ev)
			if err != nil {
				return err
			}
			var p profileV2
			if err := json.Unmarshal(up.Payload, &p); err != nil {
				return err
			}
			s.First, s.Last = p.First, p.Last
			return nil
		},
		Upcast: upcastProfile,
	})
}

// profileActorNoState lets Apply reuse the upcaster through UpcastEvent.
var profileActorNoState = upcasterFunc(upcastProfile)

type upcasterFunc func(string, uint32, []byte) (string, uint32, []byte, error)

func (f upcasterFunc) Upcast(t string, v uint32, p []byte) (string, uint32, []byte, error) {
	return f(t, v, p)
}
func (upcasterFunc) Type() string    { return "profile" }
func (upcasterFunc) Verbs() []string { return nil }
func (upcasterFunc) Decide(*actor.Context, []byte, *actor.Command) ([]actor.NewEvent, error) {
	return nil, nil
}
func (upcasterFunc) Evolve([]byte, *actor.Event) ([]byte, error) { return nil, nil }

func upcastProfile(eventType string, v uint32, payload []byte) (string, uint32, []byte, error) {
	if eventType != "evt.profile.named" || v != 1 {
		return eventType, v, payload, nil
	}
	var p struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return "", 0, nil, fmt.Errorf("named v1: %w", err)
	}
	first, last, _ := strings.Cut(p.Name, " ")
	return eventType, 2, actor.MustJSON(profileV2{First: first, Last: last}), nil
}

func profileRegistry(t testing.TB) *actor.Registry {
	t.Helper()
	r, err := actor.NewRegistry(append(builtin.All(), profileActor())...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// An event recorded with schema version 1 is shown by History as the
// actor's Upcast makes it (version 2), next to one recorded as version 2;
// the stored events keep their versions, so a replay with the same code is
// identical, state hash included.
func TestUpcast_HistoryShowsCurrentSchemaAndReplayStaysIdentical(t *testing.T) {
	dir := t.TempDir()
	reg := profileRegistry(t)
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 1, Shards: 2, ShardTemplate: testShardConfig(), Graceful: true, Registry: reg,
		DataDir: func(int) string { return dir },
		Tokens: []gateway.TokenEntry{
			{Token: tokenA, Principal: gateway.TokenPrincipal{ID: "alice", Type: "user"}, Scopes: []gateway.TokenScope{{Tenant: "a", Workspace: "*"}}},
		},
	})
	n := c.Nodes[0]
	tn := &testNode{Node: n, node: n.Node, addr: n.Addr}
	cl := tn.client(t, tokenA)
	var profileShard uint32
	for _, s := range []*pb.SubmitRequest{
		submit("profile", "p1", "set_v1", "k1", `{"name":"Ada Lovelace"}`),
		submit("profile", "p1", "set", "k2", `{"first":"Grace","last":"Hopper"}`),
	} {
		res, err := cl.Submit(ctx(t), s)
		if err != nil || res.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
			t.Fatalf("submit %s: %v %v", s.GetType(), res, err)
		}
		profileShard = res.GetShard()
	}
	h, err := cl.History(ctx(t), &pb.HistoryRequest{Address: &pb.Address{ActorType: "profile", EntityId: "p1"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"first":"Ada","last":"Lovelace"}`, `{"first":"Grace","last":"Hopper"}`}
	if len(h.GetRecords()) != len(want) {
		t.Fatalf("history has %d records, want %d: %v", len(h.GetRecords()), len(want), h.GetRecords())
	}
	for i, r := range h.GetRecords() {
		ev := r.GetEvent()
		if ev.GetSchemaVersion() != 2 || string(ev.GetPayload()) != want[i] || ev.GetType() != "evt.profile.named" {
			t.Errorf("history[%d] = %s v%d %s; want evt.profile.named v2 %s", i, ev.GetType(), ev.GetSchemaVersion(), ev.GetPayload(), want[i])
		}
	}
	// Counter events declare no version: shown as 1.
	if _, err := cl.Submit(ctx(t), submit("counter", "c1", "add", "k3", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
	hc, err := cl.History(ctx(t), &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}})
	if err != nil {
		t.Fatal(err)
	}
	if v := hc.GetRecords()[0].GetEvent().GetSchemaVersion(); v != 1 {
		t.Errorf("counter event schema_version = %d, want 1", v)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := replay.DataDir(dir, replay.Options{Shard: profileShard, Registry: reg})
	if err != nil {
		t.Fatalf("replay shard %d: %v", profileShard, err)
	}
	if !rep.Identical || rep.Compared < 2 {
		t.Errorf("replay of shard %d: identical %v after comparing %d commands, want identical after 2 or more: %+v", profileShard, rep.Identical, rep.Compared, rep)
	}
}
