package placement

import (
	"math"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func TestLeaderTransfers_Table(t *testing.T) {
	vs := func(v ...string) ShardReplicas { return ShardReplicas{Voters: v} }
	cases := []struct {
		name     string
		current  []ShardReplicas
		leaders  []string
		draining []string
		max      int
		want     []Transfer
	}{
		{"balanced: nothing", []ShardReplicas{vs("a", "b"), vs("a", "b")}, []string{"a", "b"}, nil, 10, nil},
		{"unknown leaders skipped", []ShardReplicas{vs("a", "b"), vs("a", "b"), vs("a", "b")}, []string{"a", "", "a"}, nil, 10,
			[]Transfer{{0, "a", "b"}}},
		{"leader that is no voter skipped", []ShardReplicas{vs("a", "b"), vs("a", "b")}, []string{"c", "a"}, nil, 10, nil},
		{"draining leads nothing", []ShardReplicas{vs("a", "b", "c"), vs("a", "b", "c"), vs("a", "b", "c")}, []string{"c", "a", "b"}, []string{"c"}, 10,
			[]Transfer{{0, "c", "a"}}},
		{"draining with no other voter keeps it", []ShardReplicas{vs("c")}, []string{"c"}, []string{"c"}, 10, nil},
		{"max bounds", []ShardReplicas{vs("a", "b"), vs("a", "b"), vs("a", "b"), vs("a", "b")}, []string{"a", "a", "a", "a"}, nil, 1,
			[]Transfer{{0, "a", "b"}}},
		// a leads 3, c leads 1, but a shares no shard with c: the chain
		// a -> b (shard 0), b -> c (shard 3) balances it.
		{"chain through a middle node", []ShardReplicas{vs("a", "b"), vs("a", "b"), vs("a", "b"), vs("b", "c"), vs("b", "c"), vs("c", "d"), vs("d", "a")},
			[]string{"a", "a", "a", "b", "b", "c", "d"}, nil, 10,
			[]Transfer{{0, "a", "b"}, {3, "b", "c"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := LeaderTransfers(c.current, c.leaders, c.draining, c.max)
			if !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

// plRunTransfers calls LeaderTransfers and applies its output until it
// plans nothing, checking every batch, and returns the final leaders.
func plRunTransfers(t *rapid.T, state []ShardReplicas, leaders, draining []string, maxT int) []string {
	leaders = slices.Clone(leaders)
	nodes := 0
	for _, p := range state {
		nodes += len(p.Voters)
	}
	for calls := 0; ; calls++ {
		ts := LeaderTransfers(state, leaders, draining, maxT)
		if len(ts) == 0 {
			return leaders
		}
		if len(ts) > maxT {
			t.Fatalf("%d transfers, max %d", len(ts), maxT)
		}
		seen := map[uint32]bool{}
		for _, tr := range ts {
			if seen[tr.Shard] {
				t.Fatalf("two transfers of shard %d: %v", tr.Shard, ts)
			}
			seen[tr.Shard] = true
			if leaders[tr.Shard] != tr.From || !slices.Contains(state[tr.Shard].Voters, tr.To) || tr.To == tr.From {
				t.Fatalf("bad transfer %+v: leader %q voters %v", tr, leaders[tr.Shard], state[tr.Shard].Voters)
			}
			if slices.Contains(draining, tr.To) {
				t.Fatalf("transfer %+v to a draining node", tr)
			}
			leaders[tr.Shard] = tr.To
		}
		if calls > len(state)*nodes*nodes {
			t.Fatal("does not converge")
		}
	}
}

// plLeaderLoads counts the shards each node leads.
func plLeaderLoads(leaders []string) map[string]int {
	load := map[string]int{}
	for _, l := range leaders {
		if l != "" {
			load[l]++
		}
	}
	return load
}

// Repeated LeaderTransfers (applied each time) terminates, never targets a
// draining node, leaves draining nodes leading only shards with no other
// voter, and ends optimal: no chain of transfers (a node hands a shard to
// another voter of it, which hands one of its own on, ...) leads from a node
// with load l to one with load <= l-2. That is the optimality condition for
// this assignment problem (the "semi-matching" cost-reducing path); it is
// checked here by plain reachability, independently of the planner's BFS.
// Whether that also means within one depends on the voter sets: a node that
// is a voter of few shards cannot lead many, which TestLeaderTransfers_
// WithinOne avoids.
func TestLeaderTransfers_ConvergesToOptimal(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := plGenNodes(t, 2, 9, 4)
		rf := rapid.IntRange(1, 4).Draw(t, "rf")
		shards := rapid.Uint32Range(1, 96).Draw(t, "shards")
		state := InitialPlacement(shards, nodes, rf)
		ids := plIDs(nodes)
		draining := rapid.SliceOfNDistinct(rapid.SampledFrom(ids), 0, len(ids)-1, rapid.ID[string]).Draw(t, "draining")
		leaders := make([]string, shards)
		for s, p := range state {
			if rapid.IntRange(0, 9).Draw(t, "unknown") > 0 {
				leaders[s] = rapid.SampledFrom(p.Voters).Draw(t, "leader")
			}
		}
		leaders = plRunTransfers(t, state, leaders, draining, rapid.IntRange(1, 6).Draw(t, "max"))
		load := plLeaderLoads(leaders)
		eligible := func(id string) bool { return !slices.Contains(draining, id) }
		edges := map[string][]string{}
		for s, l := range leaders {
			if l == "" {
				continue
			}
			for _, v := range state[s].Voters {
				if eligible(v) && v != l {
					if !eligible(l) {
						t.Fatalf("draining %s still leads shard %d with voters %v", l, s, state[s].Voters)
					}
					edges[l] = append(edges[l], v)
				}
			}
		}
		for _, x := range ids {
			if !eligible(x) {
				continue
			}
			seen := map[string]bool{x: true}
			stack := []string{x}
			for len(stack) > 0 {
				u := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				for _, v := range edges[u] {
					if seen[v] {
						continue
					}
					seen[v] = true
					if load[v] <= load[x]-2 {
						t.Fatalf("%s (leads %d) can still pass a shard down a chain to %s (leads %d)", x, load[x], v, load[v])
					}
					stack = append(stack, v)
				}
			}
		}
	})
}

// With the default 64 shards placed by Desired at rf = 3 and every leader
// known, leadership converges to within one on the non-draining nodes, or
// to a spread no assignment can beat. The latter is rare (a placement where
// a few nodes share most of their shards): then the nodes a most loaded one
// can pass leadership to, directly or down a chain, lead exactly the shards
// whose voters are all among them, so in any assignment one of them leads at
// least as many; and symmetrically for the nodes that can pass to a least
// loaded one. A chain the planner missed would break either bound.
func TestLeaderTransfers_WithinOne(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := plGenNodes(t, 3, 9, 1)
		state := InitialPlacement(defaultShards, nodes, 3)
		ids := plIDs(nodes)
		draining := rapid.SliceOfNDistinct(rapid.SampledFrom(ids), 0, min(2, len(ids)-3), rapid.ID[string]).Draw(t, "draining")
		leaders := make([]string, len(state))
		for s, p := range state {
			leaders[s] = rapid.SampledFrom(p.Voters).Draw(t, "leader")
		}
		leaders = plRunTransfers(t, state, leaders, draining, rapid.IntRange(1, 8).Draw(t, "max"))
		load := plLeaderLoads(leaders)
		lo, hi := math.MaxInt, 0
		for _, id := range ids {
			if slices.Contains(draining, id) {
				continue
			}
			lo, hi = min(lo, load[id]), max(hi, load[id])
		}
		if hi-lo > 1 && !plSpreadForced(state, leaders, draining, load, lo, hi) {
			t.Fatalf("loads %v (draining %v) not within one, and an assignment within one may exist", load, draining)
		}
	})
}

// plSpreadForced reports whether no assignment of leaders to eligible voters
// can have a spread below hi-lo: the nodes reachable from a node leading hi
// shards (passing a shard's leadership to another eligible voter of it) lead
// more than hi-1 each on average and can only keep or gain shards in any
// assignment, and the nodes that can reach a node leading lo lead fewer than
// lo+1 on average and can only keep or lose them.
func plSpreadForced(state []ShardReplicas, leaders, draining []string, load map[string]int, lo, hi int) bool {
	edges := map[string][]string{}
	redges := map[string][]string{}
	for s, l := range leaders {
		for _, v := range state[s].Voters {
			if v != l && !slices.Contains(draining, v) {
				edges[l] = append(edges[l], v)
				redges[v] = append(redges[v], l)
			}
		}
	}
	closure := func(from string, next map[string][]string) []string {
		seen := map[string]bool{from: true}
		out, stack := []string{from}, []string{from}
		for len(stack) > 0 {
			u := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, v := range next[u] {
				if !seen[v] {
					seen[v] = true
					out = append(out, v)
					stack = append(stack, v)
				}
			}
		}
		return out
	}
	sum := func(set []string) int {
		n := 0
		for _, x := range set {
			n += load[x]
		}
		return n
	}
	var maxNode, minNode string
	for x, n := range load {
		if slices.Contains(draining, x) {
			continue
		}
		if n == hi && (maxNode == "" || x < maxNode) {
			maxNode = x
		}
		if n == lo && (minNode == "" || x < minNode) {
			minNode = x
		}
	}
	r, q := closure(maxNode, edges), closure(minNode, redges)
	return sum(r) > len(r)*(hi-1) && sum(q) < len(q)*(lo+1)
}

// Leadership after bootstrap typically lands wherever elections put it;
// with the default shards on 5 nodes one call of max 64 balances it.
func TestLeaderTransfers_FromSkew(t *testing.T) {
	nodes := plNodes(5, 0)
	state := InitialPlacement(defaultShards, nodes, 3)
	leaders := make([]string, len(state))
	for s, p := range state {
		leaders[s] = p.Voters[0] // node-1 wherever it is a voter
	}
	ts := LeaderTransfers(state, leaders, nil, defaultShards)
	for _, tr := range ts {
		leaders[tr.Shard] = tr.To
	}
	load := map[string]int{}
	for _, l := range leaders {
		load[l]++
	}
	var counts []int
	for _, n := range nodes {
		counts = append(counts, load[n.ID])
	}
	if slices.Max(counts)-slices.Min(counts) > 1 {
		t.Fatalf("loads %v after %d transfers", counts, len(ts))
	}
	if again := LeaderTransfers(state, leaders, nil, defaultShards); len(again) != 0 {
		t.Fatalf("balanced state still plans %v", again)
	}
	t.Logf("%d transfers balance leaders to %v", len(ts), counts)
}
