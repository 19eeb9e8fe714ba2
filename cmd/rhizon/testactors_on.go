//go:build rhizon_testactors

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/upgradetest"
)

// plantedSkewEnv names the planted actor's nondeterminism: a node started
// with RHIZON_PLANTED_SKEW=N decides every "planted" add as amount+N, so
// nodes started with different values run the same revision but decide
// differently, as nondeterministic actor code would. Process tests use it
// to make one replica diverge on line, and a replay of a recorded log with
// another value diverge from the record.
const plantedSkewEnv = "RHIZON_PLANTED_SKEW"

type plantedState struct {
	Total int64 `json:"total"`
}

type plantedAdded struct {
	Amount int64 `json:"amount"`
	Total  int64 `json:"total"`
}

// addPlanted registers actor type "planted" (revision 1, verb add): only in
// binaries built with -tags rhizon_testactors.
func addPlanted(reg *actor.Registry) error {
	skew, err := strconv.ParseInt(os.Getenv(plantedSkewEnv), 10, 64)
	if err != nil && os.Getenv(plantedSkewEnv) != "" {
		return fmt.Errorf("%s=%q: want an integer", plantedSkewEnv, os.Getenv(plantedSkewEnv))
	}
	return reg.Register(actor.Define(actor.Definition[plantedState]{
		Name:     "planted",
		Revision: "1",
		Commands: map[string]actor.Handler[plantedState]{
			"add": func(_ *actor.Context, s *plantedState, cmd *actor.Command) ([]actor.NewEvent, error) {
				var p struct {
					Amount int64 `json:"amount"`
				}
				if err := actor.DecodePayload(cmd, &p); err != nil {
					return nil, err
				}
				n := p.Amount + skew
				return []actor.NewEvent{{Name: "added", Payload: actor.MustJSON(plantedAdded{Amount: n, Total: s.Total + n})}}, nil
			},
		},
		Apply: func(s *plantedState, ev *actor.Event) error {
			var a plantedAdded
			if err := json.Unmarshal(ev.Payload, &a); err != nil {
				return err
			}
			s.Total = a.Total
			return nil
		},
	}))
}

// addTestActors registers the test actors of a test build: the upgrade
// actor's revisions named by RHIZON_TEST_ACTORS (see README "Upgrading actor
// code") and the planted actor.
func addTestActors(reg *actor.Registry) error {
	if err := upgradetest.Register(reg, os.Getenv(upgradetest.EnvVar)); err != nil {
		return err
	}
	return addPlanted(reg)
}
