// Package placement plans where each shard's replicas live, which moves the
// control group leader makes when nodes join, die or drain, and which replica
// leads. Every planner is a pure function of its arguments, so a new control
// leader plans the same moves from the same state.
package placement
