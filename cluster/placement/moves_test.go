package placement

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// plApply applies m to state the way the control group does, failing on a
// move the control group would refuse.
func plApply(t interface{ Fatalf(string, ...any) }, state []ShardReplicas, m Move) {
	p := &state[m.Shard]
	switch m.Kind {
	case AddLearner:
		if slices.Contains(p.Voters, m.Node) || slices.Contains(p.Learners, m.Node) {
			t.Fatalf("%v: node already holds the shard: %+v", m, *p)
		}
		p.Learners = plInsert(slices.Clone(p.Learners), m.Node)
	case Promote:
		i := slices.Index(p.Learners, m.Node)
		if i < 0 {
			t.Fatalf("%v: not a learner: %+v", m, *p)
		}
		p.Learners = slices.Delete(slices.Clone(p.Learners), i, i+1)
		p.Voters = plInsert(slices.Clone(p.Voters), m.Node)
	case RemoveVoter:
		if i := slices.Index(p.Voters, m.Node); i >= 0 {
			if len(p.Voters) == 1 {
				t.Fatalf("%v: last voter", m)
			}
			p.Voters = slices.Delete(slices.Clone(p.Voters), i, i+1)
		} else if i := slices.Index(p.Learners, m.Node); i >= 0 {
			p.Learners = slices.Delete(slices.Clone(p.Learners), i, i+1)
		} else {
			t.Fatalf("%v: node does not hold the shard: %+v", m, *p)
		}
	default:
		t.Fatalf("unknown move %v", m)
	}
}

func plInsert(s []string, v string) []string {
	i, _ := slices.BinarySearch(s, v)
	return slices.Insert(s, i, v)
}

func plClone(in []ShardReplicas) []ShardReplicas {
	out := make([]ShardReplicas, len(in))
	for i, p := range in {
		out[i] = ShardReplicas{Voters: slices.Clone(p.Voters), Learners: slices.Clone(p.Learners)}
	}
	return out
}

func plAlways(uint32, string) bool { return true }

func TestNextMoves_Table(t *testing.T) {
	abc := []Node{{"a", ""}, {"b", ""}, {"c", ""}}
	abcd := append(slices.Clone(abc), Node{"d", ""})
	ab := abc[:2]
	vs := func(v ...string) ShardReplicas { return ShardReplicas{Voters: v} }
	cases := []struct {
		name     string
		current  []ShardReplicas
		live     []Node
		draining []string
		rf       int
		caughtUp func(uint32, string) bool
		max      int
		want     []Move
	}{
		{"on desired nodes: untouched", []ShardReplicas{vs("a", "b", "c")}, abc, nil, 3, plAlways, 10, nil},
		{"dead voter: add a learner first", []ShardReplicas{vs("a", "b", "x")}, abcd[:3], nil, 3, plAlways, 10,
			[]Move{{0, AddLearner, "c"}}},
		{"learner not caught up: nothing", []ShardReplicas{{Voters: []string{"a", "b", "x"}, Learners: []string{"c"}}}, abc, nil, 3,
			func(uint32, string) bool { return false }, 10, nil},
		{"nil caughtUp: nothing", []ShardReplicas{{Voters: []string{"a", "b", "x"}, Learners: []string{"c"}}}, abc, nil, 3, nil, 10, nil},
		{"learner caught up: promote", []ShardReplicas{{Voters: []string{"a", "b", "x"}, Learners: []string{"c"}}}, abc, nil, 3, plAlways, 10,
			[]Move{{0, Promote, "c"}}},
		{"replacement promoted: remove the dead voter", []ShardReplicas{vs("a", "b", "c", "x")}, abc, nil, 3, plAlways, 10,
			[]Move{{0, RemoveVoter, "x"}}},
		{"learner on a dead node: removed", []ShardReplicas{{Voters: []string{"a", "b", "c"}, Learners: []string{"x"}}}, abc, nil, 3, plAlways, 10,
			[]Move{{0, RemoveVoter, "x"}}},
		{"two nodes left: dead voter removed without replacement", []ShardReplicas{vs("a", "b", "x")}, ab, nil, 3, plAlways, 10,
			[]Move{{0, RemoveVoter, "x"}}},
		{"no live majority: skipped", []ShardReplicas{vs("a", "x", "y")}, abc, nil, 3, plAlways, 10, nil},
		{"under-replicated: add", []ShardReplicas{vs("a", "b")}, abc, nil, 3, plAlways, 10, []Move{{0, AddLearner, "c"}}},
		{"draining: replacement first", []ShardReplicas{vs("a", "b", "c")}, abcd, []string{"c"}, 3, plAlways, 10,
			[]Move{{0, AddLearner, "d"}}},
		{"draining: removed once replaced", []ShardReplicas{vs("a", "b", "c", "d")}, abcd, []string{"c"}, 3, plAlways, 10,
			[]Move{{0, RemoveVoter, "c"}}},
		{"draining with nowhere to go: kept", []ShardReplicas{vs("a", "b", "c")}, abc, []string{"c"}, 3, plAlways, 10, nil},
		{"learner on a draining node: removed", []ShardReplicas{{Voters: []string{"a", "b", "d"}, Learners: []string{"c"}}}, abcd, []string{"c"}, 3, plAlways, 10,
			[]Move{{0, RemoveVoter, "c"}}},
		{"priority: dead, under-replicated, draining, then by shard", []ShardReplicas{
			vs("a", "b", "c"),           // 0: draining c
			vs("a", "b"),                // 1: under-replicated
			vs("a", "c", "x"),           // 2: dead x
			vs("a", "b", "c", "d", "e"), // 3: dead e
			vs("a", "b"),                // 4: under-replicated
		}, abcd, []string{"c"}, 3, plAlways, 3,
			[]Move{{2, AddLearner, "b"}, {3, RemoveVoter, "e"}, {1, AddLearner, "d"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := NextMoves(c.current, c.live, c.draining, c.rf, c.caughtUp, c.max)
			if !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

// plClass is NextMoves's priority of a shard, computed independently.
func plClass(p ShardReplicas, live map[string]bool, draining []string, rf int) int {
	for _, v := range slices.Concat(p.Voters, p.Learners) {
		if !live[v] {
			return classDead
		}
	}
	if len(p.Voters) < rf {
		return classUnder
	}
	for _, v := range slices.Concat(p.Voters, p.Learners) {
		if slices.Contains(draining, v) {
			return classDrain
		}
	}
	return classRebalance
}

// The control group's loop, simulated: a cluster placed on some nodes loses
// some, gains some and drains some; NextMoves is applied round after round
// (learners catch up after a random delay) until it plans nothing. It must
// end on Desired, within a bounded number of rounds, and no step may leave a
// shard with fewer than min(rf, live) live voters.
func TestNextMoves_SimulationConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rf := rapid.IntRange(1, 4).Draw(t, "rf")
		shards := rapid.IntRange(1, 48).Draw(t, "shards")
		zones := rapid.IntRange(1, 4).Draw(t, "zones")
		n0 := rapid.IntRange(1, 8).Draw(t, "initial nodes")
		var nodes0 []Node
		for i := range n0 {
			nodes0 = append(nodes0, Node{fmt.Sprintf("n%d", i), fmt.Sprintf("z%d", rapid.IntRange(0, zones-1).Draw(t, "zone"))})
		}
		state := InitialPlacement(uint32(shards), nodes0, rf)

		var live []Node
		for _, n := range nodes0 {
			if !rapid.Bool().Draw(t, "dies "+n.ID) {
				live = append(live, n)
			}
		}
		for i := range rapid.IntRange(0, 3).Draw(t, "joins") {
			live = append(live, Node{fmt.Sprintf("j%d", i), fmt.Sprintf("z%d", rapid.IntRange(0, zones).Draw(t, "zone"))})
		}
		if len(live) == 0 {
			live = append(live, Node{"j9", "z0"})
		}
		var draining []string
		var placeable []Node
		for _, n := range live {
			if rapid.IntRange(0, 3).Draw(t, "drain "+n.ID) == 0 {
				draining = append(draining, n.ID)
			} else {
				placeable = append(placeable, n)
			}
		}
		isLive := map[string]bool{}
		for _, n := range live {
			isLive[n.ID] = true
		}
		floor := min(rf, len(live))
		want := Desired(uint32(shards), placeable, rf)
		maxMoves := rapid.IntRange(1, shards+2).Draw(t, "max")
		delay := rapid.IntRange(0, 2).Draw(t, "catch-up rounds")

		liveVoters := func(p ShardReplicas) int {
			k := 0
			for _, v := range p.Voters {
				if isLive[v] {
					k++
				}
			}
			return k
		}
		// Shards without a live majority cannot change; they must be left alone.
		stuck := make([]bool, shards)
		budget := 0 // moves a shard needs at most
		for s, p := range state {
			stuck[s] = 2*liveVoters(p) <= len(p.Voters)
			budget = max(budget, 3*rf+len(p.Voters))
		}
		addedAt := map[Move]int{}
		round := 0
		caughtUp := func(s uint32, node string) bool {
			r, ok := addedAt[Move{s, AddLearner, node}]
			return ok && round-r > delay
		}
		total := 0
		for ; ; round++ {
			before := plClone(state)
			moves := NextMoves(state, live, draining, rf, caughtUp, maxMoves)
			if len(moves) == 0 {
				waiting := false
				for s, p := range state {
					for _, l := range p.Learners {
						waiting = waiting || !caughtUp(uint32(s), l)
					}
				}
				if !waiting {
					break
				}
			}
			if len(moves) > maxMoves {
				t.Fatalf("round %d: %d moves, max %d", round, len(moves), maxMoves)
			}
			seen := map[uint32]bool{}
			lastClass, lastShard := -1, -1
			for _, m := range moves {
				if seen[m.Shard] {
					t.Fatalf("round %d: two moves for shard %d: %v", round, m.Shard, moves)
				}
				seen[m.Shard] = true
				if stuck[m.Shard] {
					t.Fatalf("round %d: move %v for a shard without a live majority", round, m)
				}
				c := plClass(before[m.Shard], isLive, draining, rf)
				if c < lastClass || c == lastClass && int(m.Shard) < lastShard {
					t.Fatalf("round %d: moves out of priority order: %v", round, moves)
				}
				lastClass, lastShard = c, int(m.Shard)

				b := before[m.Shard]
				switch m.Kind {
				case AddLearner:
					if len(b.Learners) > 0 {
						t.Fatalf("round %d: %v while a learner is in flight: %+v", round, m, b)
					}
					if !slices.Contains(want[m.Shard], m.Node) {
						t.Fatalf("round %d: %v adds an undesired node", round, m)
					}
					addedAt[m] = round
				case Promote:
					if !caughtUp(m.Shard, m.Node) {
						t.Fatalf("round %d: %v before it caught up", round, m)
					}
				case RemoveVoter:
					if slices.Contains(b.Voters, m.Node) {
						if slices.Contains(want[m.Shard], m.Node) {
							t.Fatalf("round %d: %v removes a desired voter", round, m)
						}
						if len(b.Learners) > 0 {
							t.Fatalf("round %d: %v while a learner is in flight: %+v", round, m, b)
						}
						if len(b.Voters)-1 < len(want[m.Shard]) {
							t.Fatalf("round %d: %v before its replacement: %+v want %v", round, m, b, want[m.Shard])
						}
					} else if slices.Contains(want[m.Shard], m.Node) && isLive[m.Node] {
						t.Fatalf("round %d: %v abandons a useful learner", round, m)
					}
				}
				lv := liveVoters(state[m.Shard])
				plApply(t, state, m)
				if after := liveVoters(state[m.Shard]); after < lv && after < floor {
					t.Fatalf("round %d: %v leaves %d live voters, floor %d", round, m, after, floor)
				}
				total++
			}
			// A backstop against a loop that never ends, no tighter than
			// the bound checked below: learners add up to delay+1 rounds
			// per replacement on top of one round per move.
			if round > shards*budget+budget*(delay+1) {
				t.Fatalf("no convergence after %d rounds", round)
			}
		}
		// Each round either used all of max or moved every unfinished shard,
		// and learners add at most delay+1 rounds per replacement.
		if bound := (total+maxMoves-1)/maxMoves + budget*(delay+1); round > bound {
			t.Fatalf("%d rounds for %d moves, bound %d", round, total, bound)
		}
		for s, p := range state {
			if stuck[s] {
				continue
			}
			if len(p.Learners) != 0 {
				t.Fatalf("shard %d ends with learners: %+v", s, p)
			}
			extra := plDiff(p.Voters, want[s])
			if len(plDiff(want[s], p.Voters)) != 0 {
				t.Fatalf("shard %d: %+v misses desired %v", s, p, want[s])
			}
			for _, v := range extra {
				// A dead voter stays when no node can replace it.
				if !isLive[v] && len(placeable) < rf {
					continue
				}
				if !slices.Contains(draining, v) {
					t.Fatalf("shard %d: %+v keeps undesired %s (desired %v)", s, p, v, want[s])
				}
			}
			// A draining voter stays only where removing it would cross the floor.
			if len(extra) > 0 && liveVoters(p) > floor {
				t.Fatalf("shard %d: %+v keeps draining voters above the floor %d", s, p, floor)
			}
			if len(placeable) >= floor && !slices.Equal(p.Voters, want[s]) {
				t.Fatalf("shard %d: %+v, want %v", s, p, want[s])
			}
		}
	})
}

// With a small max, the first moves go to shards with replicas on dead
// nodes, whatever their shard ids.
func TestNextMoves_DeadBeforeRebalance(t *testing.T) {
	nodes := plNodes(6, 0)
	state := InitialPlacement(defaultShards, nodes[:5], 3)
	// node-6 joins (rebalancing everywhere it is desired) and node-2 dies.
	live := append(slices.Clone(nodes[:1]), nodes[2:]...)
	var dead []uint32
	for s, p := range state {
		if slices.Contains(p.Voters, "node-2") {
			dead = append(dead, uint32(s))
		}
	}
	moves := NextMoves(state, live, nil, 3, plAlways, len(dead))
	if len(moves) != len(dead) {
		t.Fatalf("%d moves, want %d", len(moves), len(dead))
	}
	for i, m := range moves {
		if m.Shard != dead[i] {
			t.Fatalf("move %d is %v, want shard %d first (dead replicas: %v)", i, m, dead[i], dead)
		}
	}
	all := NextMoves(state, live, nil, 3, plAlways, defaultShards)
	if len(all) <= len(dead) {
		t.Fatalf("expected rebalancing moves after the %d dead ones, got %v", len(dead), all)
	}
}

// Draining a node moves every replica off it, and it keeps voting until its
// replacement is promoted.
func TestNextMoves_DrainEmptiesTheNode(t *testing.T) {
	nodes := plNodes(5, 0)
	state := InitialPlacement(defaultShards, nodes, 3)
	draining := []string{"node-3"}
	had := 0
	for _, p := range state {
		if slices.Contains(p.Voters, "node-3") {
			had++
		}
	}
	rounds := 0
	for ; ; rounds++ {
		moves := NextMoves(state, nodes, draining, 3, plAlways, 8)
		if len(moves) == 0 {
			break
		}
		for _, m := range moves {
			if m.Kind == RemoveVoter && len(state[m.Shard].Voters) <= 3 {
				t.Fatalf("%v before a replacement: %+v", m, state[m.Shard])
			}
			plApply(t, state, m)
		}
	}
	for s, p := range state {
		if slices.Contains(p.Voters, "node-3") || slices.Contains(p.Learners, "node-3") {
			t.Fatalf("shard %d still on node-3: %+v", s, p)
		}
		if len(p.Voters) != 3 {
			t.Fatalf("shard %d: %+v", s, p)
		}
	}
	t.Logf("drained %d replicas in %d rounds of at most 8 moves", had, rounds)
}

func TestNextMoves_Deterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := plGenNodes(t, 1, 8, 3)
		state := InitialPlacement(32, nodes, 3)
		live := rapid.SliceOfDistinct(rapid.SampledFrom(append(nodes, Node{"extra", "z0"})), func(n Node) string { return n.ID }).Draw(t, "live")
		draining := rapid.SliceOfDistinct(rapid.SampledFrom(plIDs(nodes)), rapid.ID[string]).Draw(t, "draining")
		a := NextMoves(state, live, draining, 3, plAlways, 100)
		b := NextMoves(state, rapid.Permutation(live).Draw(t, "perm"), rapid.Permutation(draining).Draw(t, "dperm"), 3, plAlways, 100)
		if !slices.Equal(a, b) {
			t.Fatalf("%v != %v", a, b)
		}
	})
}
