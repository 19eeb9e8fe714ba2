//go:build !rhizon_testactors

package main

import (
	"fmt"
	"os"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/upgradetest"
)

// addTestActors registers nothing in a release build: the test actors (the
// two-revision upgrade actor and the planted nondeterministic one) are only
// in binaries built with -tags rhizon_testactors (testactors_on.go). Their
// variables are refused rather than ignored, so a test run against the
// wrong binary says why instead of failing on an unknown actor type.
func addTestActors(*actor.Registry) error {
	for _, env := range []string{upgradetest.EnvVar, plantedSkewEnv} {
		if v, ok := os.LookupEnv(env); ok {
			return fmt.Errorf("%s=%q: this binary has no test actors; build it with -tags rhizon_testactors", env, v)
		}
	}
	return nil
}

// plantedSkewEnv names the planted actor's nondeterminism (testactors_on.go).
const plantedSkewEnv = "RHIZON_PLANTED_SKEW"
