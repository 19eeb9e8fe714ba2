package placement

// Placement: where each shard's replicas live, how the control group leader
// moves them when nodes join, die or drain, and which replica leads.
//
// Everything here is a pure function of its arguments: no I/O, no clock, no
// randomness, no dependence on map iteration order. The control group leader
// calls these planners, proposes their output through the control Raft log,
// and a new leader after failover plans the same moves from the same state.

import (
	"cmp"
	"fmt"
	"slices"
)

// Node is a node as placement sees it.
type Node struct {
	ID string
	// Zone is the failure domain (rack, availability zone). Replicas of a
	// shard are spread over distinct zones when possible. Nodes without a
	// zone share the zone "".
	Zone string
}

// ShardReplicas is one shard's replica set as the control group records it.
type ShardReplicas struct {
	// Voters are the node ids that take part in the shard's quorum, sorted.
	Voters []string `json:"voters"`
	// Learners are non-voters catching up (snapshot + log) before they are
	// promoted, sorted.
	Learners []string `json:"learners,omitempty"`
}

// MoveKind is one kind of replica change. The values are recorded in the
// control Raft log, so they must never be renumbered.
type MoveKind uint8

const (
	// AddLearner adds Node as a non-voter; it catches up without affecting
	// the shard's quorum.
	AddLearner MoveKind = 1
	// Promote makes the learner Node a voter once it has caught up.
	Promote MoveKind = 2
	// RemoveVoter removes Node's replica. NextMoves also uses it to abandon a
	// learner (on a dead node or one placement no longer wants): removing a
	// non-voter is the same Raft configuration change.
	RemoveVoter MoveKind = 3
)

// String returns the kind's name.
func (k MoveKind) String() string {
	switch k {
	case AddLearner:
		return "AddLearner"
	case Promote:
		return "Promote"
	case RemoveVoter:
		return "RemoveVoter"
	}
	return fmt.Sprintf("MoveKind(%d)", uint8(k))
}

// Move is one step of a rebalancing: one Raft configuration change of one
// shard.
type Move struct {
	Shard uint32   `json:"shard"`
	Kind  MoveKind `json:"kind"`
	Node  string   `json:"node"`
}

// Transfer moves the leadership of Shard from the voter From to the voter To.
type Transfer struct {
	Shard uint32 `json:"shard"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// The rendezvous weight of node id for shard is
//
//	fmix64(fnv1a64(id) XOR (uint64(shard) * 0x9e3779b97f4a7c15))
//
// where fnv1a64 is 64-bit FNV-1a over the id's bytes (offset basis
// 14695981039346656037, prime 1099511628211) and fmix64 is MurmurHash3's
// 64-bit finalizer. FNV-1a alone mixes its last bytes poorly (ids like
// "node-1" and "node-2" differ only there); the finalizer gives every input
// bit avalanche, so each shard ranks the nodes independently. The node part
// is hashed once per node, which keeps planning S*n cheap.
//
// The weights decide where data lives: changing anything here would move
// nearly every replica of every existing cluster on upgrade. Never change it;
// TestPlacement_HashIsPinned fails if it does.
const (
	fnv64Offset = 14695981039346656037
	fnv64Prime  = 1099511628211
	golden64    = 0x9e3779b97f4a7c15
)

func fnv1a64(s string) uint64 {
	h := uint64(fnv64Offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnv64Prime
	}
	return h
}

func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// placementWeight is the rendezvous weight of a node (given its fnv1a64 id
// hash) for shard. For one shard it is a bijection of the id hash, so two
// nodes tie only if their ids collide in FNV-1a; ties go to the smaller id.
func placementWeight(shard uint32, idHash uint64) uint64 {
	return fmix64(idHash ^ uint64(shard)*golden64)
}

// normalizeNodes returns nodes sorted by id with duplicate ids dropped (the
// smallest zone wins), so results never depend on the caller's order.
func normalizeNodes(nodes []Node) []Node {
	ns := slices.Clone(nodes)
	slices.SortFunc(ns, func(a, b Node) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Zone, b.Zone))
	})
	return slices.CompactFunc(ns, func(a, b Node) bool { return a.ID == b.ID })
}

// Desired returns, for every shard, the sorted ids of the min(rf, n) nodes it
// should live on, by rendezvous (highest random weight) hashing: each shard
// ranks all nodes by placementWeight and takes the best. Rendezvous hashing
// is what makes membership changes cheap: a shard's ranking of two nodes
// never depends on any third node, so a joining node only takes the replicas
// for which it ranks high enough, and a leaving node only gives up its own.
//
// Placement is zone-aware: a shard first takes the highest-weight node of
// each zone, best zone first, then fills the remaining slots by weight. With
// at least rf zones every shard spans rf distinct zones. With fewer zones it
// still spans all of them, so losing a whole zone never loses every replica;
// and a zone count that drops below rf (its last node died) only moves that
// node's replicas instead of switching every shard to another rule. With a
// single zone (no zones configured) this is plain top-rf.
//
// The cost of zone-awareness is balance: a zone receives about 1/min(rf,
// zones) of the replicas whatever its size, so small zones' nodes carry more.
//
// rf < 1 or no nodes gives every shard an empty set.
func Desired(shards uint32, nodes []Node, rf int) [][]string {
	out := make([][]string, shards)
	ns := normalizeNodes(nodes)
	if rf < 1 || len(ns) == 0 {
		return out
	}
	hashes := make([]uint64, len(ns))
	zoneNames := make([]string, 0, len(ns))
	for i, n := range ns {
		hashes[i] = fnv1a64(n.ID)
		zoneNames = append(zoneNames, n.Zone)
	}
	slices.Sort(zoneNames)
	zoneNames = slices.Compact(zoneNames)
	zone := make([]int, len(ns))
	for i, n := range ns {
		zone[i], _ = slices.BinarySearch(zoneNames, n.Zone)
	}
	k := min(rf, len(ns))

	type ranked struct {
		w uint64
		i int
	}
	order := make([]ranked, len(ns))
	zoneUsed := make([]bool, len(zoneNames))
	picked := make([]bool, len(ns))
	for s := range shards {
		for i := range ns {
			order[i] = ranked{placementWeight(s, hashes[i]), i}
		}
		// ns is sorted by id, so comparing indexes breaks weight ties by id.
		slices.SortFunc(order, func(a, b ranked) int {
			return cmp.Or(cmp.Compare(b.w, a.w), cmp.Compare(a.i, b.i))
		})
		clear(zoneUsed)
		clear(picked)
		set := make([]string, 0, k)
		for _, r := range order {
			if len(set) == k {
				break
			}
			if !zoneUsed[zone[r.i]] {
				zoneUsed[zone[r.i]] = true
				picked[r.i] = true
				set = append(set, ns[r.i].ID)
			}
		}
		for _, r := range order {
			if len(set) == k {
				break
			}
			if !picked[r.i] {
				picked[r.i] = true
				set = append(set, ns[r.i].ID)
			}
		}
		slices.Sort(set)
		out[s] = set
	}
	return out
}

// InitialPlacement is Desired as replica sets of voters only, for
// bootstrapping a new cluster: those voters create each shard's Raft group.
func InitialPlacement(shards uint32, nodes []Node, rf int) []ShardReplicas {
	d := Desired(shards, nodes, rf)
	out := make([]ShardReplicas, len(d))
	for i, v := range d {
		out[i] = ShardReplicas{Voters: v}
	}
	return out
}

// Move priorities: a lower class is planned first when max cuts the plan.
const (
	// classDead: the shard has a replica on a node that is not live. Every
	// further failure brings it closer to losing its quorum.
	classDead = iota
	// classUnder: fewer than rf voters, all live.
	classUnder
	// classDrain: a replica on a draining node, which an operator is
	// waiting to stop.
	classDrain
	// classRebalance: healthy, just not where Desired puts it.
	classRebalance
)

// NextMoves plans up to max moves that bring current (indexed by shard id)
// toward Desired over the live nodes that are not draining.
//
// Every replacement is add learner -> promote -> remove old: the new replica
// catches up as a non-voter, so the quorum never waits for it, and the old
// replica goes only after its replacement votes. The rules:
//
//   - One change in flight per shard, at most one move per shard per call. A
//     shard with a learner gets only Promote, once caughtUp(shard, node)
//     reports true (nil caughtUp: never). The exception is a learner that can
//     no longer help (its node is dead, draining or no longer desired): it is
//     removed with RemoveVoter, since waiting for it would stall the shard.
//   - A voter is removed only while the shard has more voters than desired,
//     so after its replacement was promoted, and never when that would leave
//     fewer than min(rf, len(live)) voters on live nodes. A voter on a dead
//     node does not count as live: it goes first, and it may also go when no
//     replacement exists (fewer nodes than rf), as it only inflates the
//     quorum.
//   - A shard whose live voters are not a majority is skipped: it cannot
//     commit a configuration change, and planning one would only hold one
//     of the max slots forever. It needs an operator.
//   - A shard already on its desired nodes is untouched, and a shard that is
//     moved only loses nodes Desired no longer wants (minimal movement).
//   - Draining nodes stay live (their replicas keep voting) but are not
//     desired, so their replicas move off first; a draining voter is kept
//     while removing it would drop the shard below the live floor, e.g. when
//     there is no other node to take its place.
//
// Moves are ordered by priority — shards with replicas on dead nodes, then
// shards with fewer than rf voters, then shards on draining nodes, then
// plain rebalancing — and then by shard id; the first max are returned.
// Learners that are catching up do not count against max: a caller that
// wants to bound concurrent snapshot transfers passes max minus the number
// of learners in flight.
func NextMoves(current []ShardReplicas, live []Node, draining []string, rf int, caughtUp func(shard uint32, node string) bool, max int) []Move {
	if max <= 0 || rf < 1 || len(current) == 0 {
		return nil
	}
	liveNodes := normalizeNodes(live)
	drain := slices.Clone(draining)
	slices.Sort(drain)
	p := planner{
		rf:       rf,
		floor:    min(rf, len(liveNodes)),
		caughtUp: caughtUp,
		zoneOf:   make(map[string]string, len(liveNodes)),
		draining: make(map[string]bool, len(drain)),
	}
	var placeable []Node
	for _, n := range liveNodes {
		p.zoneOf[n.ID] = n.Zone
		if _, found := slices.BinarySearch(drain, n.ID); found {
			p.draining[n.ID] = true
			continue
		}
		placeable = append(placeable, n)
	}
	desired := Desired(uint32(len(current)), placeable, rf)

	type planned struct {
		class int
		move  Move
	}
	var plan []planned
	for s, cur := range current {
		if m, class, ok := p.shard(uint32(s), cur, desired[s]); ok {
			plan = append(plan, planned{class, m})
		}
	}
	slices.SortStableFunc(plan, func(a, b planned) int { return cmp.Compare(a.class, b.class) })
	out := make([]Move, 0, min(max, len(plan)))
	for _, pm := range plan[:min(max, len(plan))] {
		out = append(out, pm.move)
	}
	return out
}

type planner struct {
	rf       int
	floor    int // min(rf, live nodes): the fewest live voters a removal may leave
	caughtUp func(uint32, string) bool
	zoneOf   map[string]string // live nodes only
	draining map[string]bool   // live draining nodes only
}

func (p *planner) live(id string) bool { _, ok := p.zoneOf[id]; return ok }

// shard plans the next move of one shard toward want, its desired voters.
func (p *planner) shard(s uint32, cur ShardReplicas, want []string) (Move, int, bool) {
	voters := slices.Compact(slices.Sorted(slices.Values(cur.Voters)))
	var learners []string
	for _, l := range slices.Compact(slices.Sorted(slices.Values(cur.Learners))) {
		if !slices.Contains(voters, l) {
			learners = append(learners, l)
		}
	}
	liveVoters := 0
	for _, v := range voters {
		if p.live(v) {
			liveVoters++
		}
	}
	class := p.class(voters, learners)
	if 2*liveVoters <= len(voters) {
		return Move{}, 0, false
	}
	wanted := func(id string) bool { _, ok := slices.BinarySearch(want, id); return ok }

	if len(learners) > 0 {
		for _, l := range learners {
			if !wanted(l) {
				// Dead, draining, or displaced by a membership change.
				return Move{Shard: s, Kind: RemoveVoter, Node: l}, class, true
			}
		}
		for _, l := range learners {
			if p.caughtUp != nil && p.caughtUp(s, l) {
				return Move{Shard: s, Kind: Promote, Node: l}, class, true
			}
		}
		return Move{}, 0, false
	}

	// Voters Desired no longer wants, in removal order: dead, then draining,
	// then merely misplaced.
	var extra []string
	for _, rank := range []int{0, 1, 2} {
		for _, v := range voters {
			if wanted(v) {
				continue
			}
			r := 2
			if !p.live(v) {
				r = 0
			} else if p.draining[v] {
				r = 1
			}
			if r == rank {
				extra = append(extra, v)
			}
		}
	}
	if len(voters) > len(want) {
		for _, v := range extra {
			after := liveVoters
			if p.live(v) {
				after--
			}
			if after >= p.floor && len(voters) > 1 {
				return Move{Shard: s, Kind: RemoveVoter, Node: v}, class, true
			}
		}
	}
	if add, ok := p.nextLearner(voters, want); ok {
		return Move{Shard: s, Kind: AddLearner, Node: add}, class, true
	}
	// Nothing to add: a dead voter has no replacement (fewer placeable nodes
	// than rf). It stays: removing it would not make the shard more
	// available (the quorum of the live voters is the same), and when its
	// node comes back it catches up from its own log instead of a snapshot.
	return Move{}, 0, false
}

// nextLearner picks the desired node to add next: one in a zone the shard's
// live voters do not cover yet if there is one (restoring zone redundancy
// first), then by id.
func (p *planner) nextLearner(voters, want []string) (string, bool) {
	var covered []string
	for _, v := range voters {
		if z, ok := p.zoneOf[v]; ok {
			covered = append(covered, z)
		}
	}
	best, bestNewZone := "", false
	for _, w := range want { // sorted
		if slices.Contains(voters, w) {
			continue
		}
		newZone := !slices.Contains(covered, p.zoneOf[w])
		if best == "" || (newZone && !bestNewZone) {
			best, bestNewZone = w, newZone
		}
	}
	return best, best != ""
}

func (p *planner) class(voters, learners []string) int {
	for _, v := range voters {
		if !p.live(v) {
			return classDead
		}
	}
	for _, l := range learners {
		if !p.live(l) {
			return classDead
		}
	}
	if len(voters) < p.rf {
		return classUnder
	}
	for _, v := range slices.Concat(voters, learners) {
		if p.draining[v] {
			return classDrain
		}
	}
	return classRebalance
}

// LeaderTransfers proposes leadership transfers so that the nodes lead
// shares of the shards that differ by at most one, and draining nodes lead
// nothing. leaders[i] is shard i's current leader ("" = unknown: the shard is
// skipped, and so is a leader that is not one of the shard's voters). The
// candidate nodes are all voters of current that are not draining; the
// caller passes nodes that are down or otherwise unfit to lead in draining
// too, as the planner has no other way to know.
//
// First every shard led by a draining node goes to its least-loaded eligible
// voter (by shard id). Then, repeatedly, leadership moves along the
// shortest chain of shards from a node leading k to a node leading at most
// k-2: node a hands one of its shards to a voter b of that shard, b hands one
// of its own on, and so on. A plain "most loaded to least loaded" greedy
// stops early whenever the two share no shard; chains reach every
// improvement the voter sets allow, so the result is within one whenever
// any assignment is. Each step either lowers the sum of squared loads or
// shortens the shortest remaining chain, so it terminates, and because each
// step depends only on the current state, calling with a small max
// repeatedly converges the same way as one call with a large max.
//
// At most max transfers are returned, at most one per shard (a shard passed
// on twice becomes one transfer), deterministically ordered.
func LeaderTransfers(current []ShardReplicas, leaders []string, draining []string, max int) []Transfer {
	if max <= 0 {
		return nil
	}
	n := min(len(current), len(leaders))
	var ids []string
	for _, c := range current {
		ids = append(ids, c.Voters...)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	index := make(map[string]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	eligible := make([]bool, len(ids))
	for i, id := range ids {
		eligible[i] = !slices.Contains(draining, id)
	}

	lead := make([]int, n) // node index, -1 = skipped
	cands := make([][]int, n)
	load := make([]int, len(ids))
	for s := range n {
		lead[s] = -1
		voters := slices.Compact(slices.Sorted(slices.Values(current[s].Voters)))
		if leaders[s] == "" || !slices.Contains(voters, leaders[s]) {
			continue
		}
		lead[s] = index[leaders[s]]
		load[lead[s]]++
		for _, v := range voters {
			if eligible[index[v]] {
				cands[s] = append(cands[s], index[v])
			}
		}
	}
	orig := slices.Clone(lead)
	var touched []int
	changed := 0
	move := func(s, to int) {
		if lead[s] == orig[s] {
			touched = append(touched, s)
			changed++
		} else if to == orig[s] {
			changed--
		}
		load[lead[s]]--
		load[to]++
		lead[s] = to
	}

	for s := 0; s < n && changed < max; s++ {
		if lead[s] < 0 || eligible[lead[s]] || len(cands[s]) == 0 {
			continue
		}
		to := cands[s][0]
		for _, c := range cands[s][1:] {
			if load[c] < load[to] {
				to = c
			}
		}
		move(s, to)
	}

	for changed < max {
		s, to, ok := nextTransferHop(lead, cands, load, eligible)
		if !ok {
			break
		}
		move(s, to)
	}

	slices.Sort(touched)
	touched = slices.Compact(touched)
	var out []Transfer
	for _, s := range touched {
		if lead[s] != orig[s] {
			out = append(out, Transfer{Shard: uint32(s), From: ids[orig[s]], To: ids[lead[s]]})
		}
	}
	return out
}

// nextTransferHop finds the globally shortest chain from an eligible node
// with load l to an eligible node with load <= l-2, where each hop passes a
// shard led by one node to another of its eligible voters, and returns the
// chain's first hop. Sources are tried from the most loaded (then by index)
// and BFS explores shards and voters in ascending order, so the choice is
// deterministic.
//
// Why the first hop suffices: on a shortest chain of length >= 2 every
// intermediate node has load exactly l-1 and the target l-2 (any other load
// would make a shorter chain), so the first hop only swaps loads l and l-1
// between two nodes, and the rest of the chain is a shorter one. A chain of
// length 1 lowers the sum of squared loads.
func nextTransferHop(lead []int, cands [][]int, load []int, eligible []bool) (shard, to int, ok bool) {
	nodes := len(load)
	minLoad := -1
	var sources []int
	for i := range nodes {
		if eligible[i] {
			sources = append(sources, i)
			if minLoad < 0 || load[i] < minLoad {
				minLoad = load[i]
			}
		}
	}
	slices.SortStableFunc(sources, func(a, b int) int { return cmp.Compare(load[b], load[a]) })
	ledBy := make([][]int, nodes)
	for s, l := range lead {
		if l >= 0 {
			ledBy[l] = append(ledBy[l], s)
		}
	}

	best := nodes + 1 // shortest chain length found so far
	dist := make([]int, nodes)
	type via struct{ from, shard int }
	parent := make([]via, nodes)
	var bestParent []via
	bestTarget, bestSrc := -1, -1
	for _, src := range sources {
		if load[src] < minLoad+2 || best == 1 {
			break // sorted: no later source has a target; nothing beats 1
		}
		for i := range dist {
			dist[i] = -1
		}
		dist[src] = 0
		frontier := []int{src}
		for depth := 1; depth < best && len(frontier) > 0; depth++ {
			var next []int
			target := -1
			for _, u := range frontier {
				for _, s := range ledBy[u] {
					for _, v := range cands[s] {
						if dist[v] >= 0 {
							continue
						}
						dist[v] = depth
						parent[v] = via{u, s}
						next = append(next, v)
						if load[v] <= load[src]-2 && (target < 0 || load[v] < load[target] || (load[v] == load[target] && v < target)) {
							target = v
						}
					}
				}
			}
			if target >= 0 {
				best, bestTarget, bestSrc = depth, target, src
				bestParent = slices.Clone(parent)
				break
			}
			frontier = next
		}
	}
	if bestTarget < 0 {
		return 0, 0, false
	}
	v := bestTarget
	for bestParent[v].from != bestSrc {
		v = bestParent[v].from
	}
	return bestParent[v].shard, v, true
}
