// Package upgradetest holds "upgrade", a test-only actor type with two code
// revisions whose Decide differs, for testing rolling upgrades: revision 1
// adds the amount, revision 2 adds twice the amount, and each records the
// revision that decided it in its event. It is registered only through the
// RHIZON_TEST_ACTORS test hook (see FromEnv); no production node has it.
package upgradetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/rhizon/rhizon/actor"
)

// Type is the actor type name.
const Type = "upgrade"

// EnvVar names the test hook: "upgrade@1" registers revision 1 (a node of
// the "old binary"), "upgrade@1,2" revisions 1 and 2 (the "new binary").
const EnvVar = "RHIZON_TEST_ACTORS"

// State is the entity's state.
type State struct {
	Total int64 `json:"total"`
}

// Added is the payload of evt.upgrade.added.
type Added struct {
	Amount int64  `json:"amount"`
	Total  int64  `json:"total"`
	By     string `json:"by"` // the revision that decided the command
}

type addPayload struct {
	Amount int64 `json:"amount"`
}

// Behavior returns revision rev ("1" or "2") of the upgrade actor.
func Behavior(rev string) (actor.Behavior, error) {
	factor := map[string]int64{"1": 1, "2": 2}[rev]
	if factor == 0 {
		return nil, fmt.Errorf("upgradetest: no revision %q (have 1, 2)", rev)
	}
	return actor.Define(actor.Definition[State]{
		Name:     Type,
		Revision: rev,
		Commands: map[string]actor.Handler[State]{
			"add": func(_ *actor.Context, s *State, cmd *actor.Command) ([]actor.NewEvent, error) {
				var p addPayload
				if err := actor.DecodePayload(cmd, &p); err != nil {
					return nil, err
				}
				n := p.Amount * factor
				return []actor.NewEvent{{Name: "added", Payload: actor.MustJSON(Added{Amount: n, Total: s.Total + n, By: rev})}}, nil
			},
		},
		Apply: func(s *State, ev *actor.Event) error {
			var a Added
			if err := json.Unmarshal(ev.Payload, &a); err != nil {
				return err
			}
			s.Total = a.Total
			return nil
		},
	}), nil
}

// Register adds to reg the revisions spec names, "upgrade@1" or
// "upgrade@1,2" (the first listed is the base). An empty spec adds nothing.
func Register(reg *actor.Registry, spec string) error {
	if spec == "" {
		return nil
	}
	name, revs, ok := strings.Cut(spec, "@")
	if !ok || name != Type || revs == "" {
		return fmt.Errorf("%s=%q: want %s@<revisions>, e.g. %s@1,2", EnvVar, spec, Type, Type)
	}
	list := strings.Split(revs, ",")
	if slices.Contains(list, "") {
		return fmt.Errorf("%s=%q: empty revision", EnvVar, spec)
	}
	for _, rev := range list {
		b, err := Behavior(rev)
		if err != nil {
			return err
		}
		if err := reg.AddRevision(b); err != nil {
			return err
		}
	}
	return nil
}
