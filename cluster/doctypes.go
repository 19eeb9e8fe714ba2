package cluster

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/cluster/membership"
)

// docTypes is the document part of a gossiped actor map: each document
// type's declaration (the version from builtin.DocMarker on), so that a
// rolling upgrade of the code revision alone is no mismatch.
func docTypes(actors map[string]string) map[string]string {
	out := map[string]string{}
	for t, v := range actors {
		if i := strings.Index(v, builtin.DocMarker); i >= 0 {
			// Nodes before builtin.DocIndexSep joined the fields with
			// commas: the same declaration during a rolling upgrade.
			out[t] = strings.ReplaceAll(v[i:], ",", builtin.DocIndexSep)
		}
	}
	return out
}

// docTypeMismatches compares self's document types with every live member's
// and describes each difference, sorted. Members that gossip no actor map
// (starting) are skipped.
func docTypeMismatches(self string, own map[string]string, members []membership.Member) []string {
	mine := docTypes(own)
	var out []string
	for _, m := range members {
		if m.Meta.ID == self || m.Meta.Actors == nil || (m.State != membership.MemberAlive && m.State != membership.MemberSuspect) {
			continue
		}
		theirs := docTypes(m.Meta.Actors)
		var diffs []string
		for _, t := range sortedKeys(mine) {
			switch v, ok := theirs[t]; {
			case !ok:
				diffs = append(diffs, fmt.Sprintf("%s is not declared there", t))
			case v != mine[t]:
				diffs = append(diffs, fmt.Sprintf("%s is %s there, %s here", t, describeDoc(v), describeDoc(mine[t])))
			}
		}
		for _, t := range sortedKeys(theirs) {
			if _, ok := mine[t]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s is declared there, not here", t))
			}
		}
		if len(diffs) > 0 {
			out = append(out, fmt.Sprintf("node %s declares other document types (%s): start every node with the same --document-types", m.Meta.ID, strings.Join(diffs, "; ")))
		}
	}
	return out
}

// describeDoc says what a document type's declaration holds.
func describeDoc(v string) string {
	idx := strings.TrimPrefix(strings.TrimPrefix(v, builtin.DocMarker), ":")
	if idx == "" {
		return "without indexes"
	}
	return "indexed on " + strings.ReplaceAll(idx, builtin.DocIndexSep, ",")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// docTypesLoop keeps docMismatch current and logs each change: the members
// gossip their actor maps, and a member that declares other document types
// (or indexes) decides their commands differently.
func (n *Node) docTypesLoop() {
	defer n.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last []string
	for {
		cur := docTypeMismatches(n.cfg.NodeID, n.meta().Actors, n.members())
		if !slices.Equal(cur, last) {
			for _, m := range cur {
				n.log.Error("document types differ from a peer's", "problem", m)
			}
			if len(cur) == 0 && len(last) > 0 {
				n.log.Info("document types agree with every peer again")
			}
			last = cur
			c := slices.Clone(cur)
			n.docMismatch.Store(&c)
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}
