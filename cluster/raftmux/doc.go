// Package raftmux is a node's Raft transport: every Raft group of the node
// (its shard replicas and the control group) shares one TCP listener, the
// dialer naming the group in a short header; both ends prove they know the
// cluster secret before any Raft traffic (muxauth.go); and the heartbeats of
// all groups to one peer travel together on one link (beats.go).
package raftmux
