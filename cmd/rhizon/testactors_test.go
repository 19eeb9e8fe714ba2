//go:build !rhizon_testactors

package main

import (
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor/upgradetest"
)

// A release build has no test actors, and says so when asked for them
// instead of starting without the types a test expects.
func TestRegistryRefusesTestActorHooksInARelease(t *testing.T) {
	reg, err := registry(&docTypesFlag{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{upgradetest.Type, "planted"} {
		if _, ok := reg.Lookup(typ); ok {
			t.Fatalf("release registry has test actor %q", typ)
		}
	}
	for _, env := range []string{upgradetest.EnvVar + "=upgrade@1", plantedSkewEnv + "=1"} {
		k, v, _ := strings.Cut(env, "=")
		t.Run(k, func(t *testing.T) {
			t.Setenv(k, v)
			_, err := registry(&docTypesFlag{}, nil)
			if err == nil || !strings.Contains(err.Error(), "-tags rhizon_testactors") {
				t.Fatalf("registry with %s: %v, want a refusal naming the build tag", env, err)
			}
		})
	}
}
