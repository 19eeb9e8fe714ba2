package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/ingresstest"
)

// renamer's "renamed" event was {"name": "First Last"} in schema version 1
// and is {"first", "last"} in version 2. Its verb "old" still emits version
// 1 (the events older code recorded), "new" emits version 2.
func renamer() actor.Behavior {
	type st struct{}
	emit := func(v uint32, payload string) actor.Handler[st] {
		return func(*actor.Context, *st, *actor.Command) ([]actor.NewEvent, error) {
			return []actor.NewEvent{{Name: "renamed", Payload: []byte(payload), SchemaVersion: v}}, nil
		}
	}
	return actor.Define(actor.Definition[st]{
		Name: "renamer",
		Commands: map[string]actor.Handler[st]{
			"old": emit(1, `{"name":"Ada Lovelace"}`),
			"new": emit(2, `{"first":"Grace","last":"Hopper"}`),
		},
		Apply: func(*st, *actor.Event) error { return nil },
		Upcast: func(typ string, v uint32, p []byte) (string, uint32, []byte, error) {
			if typ != "evt.renamer.renamed" || v != 1 {
				return typ, v, p, nil
			}
			var old struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal(p, &old); err != nil {
				return "", 0, nil, err
			}
			first, last, _ := strings.Cut(old.Name, " ")
			return typ, 2, actor.MustJSON(map[string]string{"first": first, "last": last}), nil
		},
	})
}

// Watch shows every event as the actor's upcaster makes it, whether the
// relay publishes protobuf or JSON (Watch then reads the JSON subjects and
// filters the entity itself).
func TestWatch_AppliesTheUpcasterInEveryEventsFormat(t *testing.T) {
	for _, format := range []string{stream.FormatProtobuf, stream.FormatJSON} {
		t.Run(format, func(t *testing.T) {
			reg, err := actor.NewRegistry(append(builtin.All(), renamer())...)
			if err != nil {
				t.Fatal(err)
			}
			e := startAsyncEnvOpts(t, ingresstest.Options{Registry: reg, Tune: func(c *ingress.Config) { c.EventsFormat = format }}, nil)
			ctx := callCtx(t, tokAlice)
			for i, verb := range []string{"old", "new", "old"} {
				id := "r1"
				if i == 2 {
					id = "r2" // another entity, which the entity filter leaves out
				}
				res, err := e.gw.Submit(ctx, &pb.SubmitRequest{
					Address: &pb.Address{Workspace: "w", ActorType: "renamer", EntityId: id},
					Type:    actor.CommandType("renamer", verb), Payload: []byte(`{}`), IdempotencyKey: fmt.Sprint("k", i),
				})
				if err != nil || res.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
					t.Fatalf("submit %s: %v %v", verb, res, err)
				}
			}
			got := collect(t, e.gw, tokAlice, &pb.WatchRequest{Workspace: "w", ActorType: "renamer", EntityId: "r1", FromBeginning: true}, 2, 300*time.Millisecond)
			want := []string{`{"first":"Ada","last":"Lovelace"}`, `{"first":"Grace","last":"Hopper"}`}
			if len(got) != len(want) {
				t.Fatalf("watch gave %d events, want %d", len(got), len(want))
			}
			for i, w := range got {
				ev := w.ev
				if ev.GetAddress().GetEntityId() != "r1" || ev.GetVersion() != uint64(i+1) || ev.GetSchemaVersion() != 2 || string(ev.GetPayload()) != want[i] {
					t.Errorf("watch[%d] = %s v%d schema %d %s; want r1 v%d schema 2 %s", i, ev.GetAddress().GetEntityId(), ev.GetVersion(), ev.GetSchemaVersion(), ev.GetPayload(), i+1, want[i])
				}
			}
		})
	}
}
