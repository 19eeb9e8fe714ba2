//go:build failpoints

package shard

import (
	"errors"
	"os"
	"strings"

	"github.com/rhizon/rhizon/engine"
)

// applyFailpoint fails the apply of an entry holding a command for an entity
// whose id starts with "failpoint-halt", as a store failure would, when
// RHIZON_FAILPOINTS lists "apply-error": process tests halt one node's
// replica with it. Only built with -tags failpoints.
func applyFailpoint(ent *engine.Entry) error {
	listed := false
	for _, f := range strings.Split(os.Getenv("RHIZON_FAILPOINTS"), ",") {
		listed = listed || f == "apply-error"
	}
	if !listed {
		return nil
	}
	for _, c := range ent.Commands {
		if strings.HasPrefix(c.Address.EntityID, "failpoint-halt") {
			return errors.New("failpoint apply-error: simulated store failure")
		}
	}
	return nil
}
