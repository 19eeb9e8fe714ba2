// Package membership tells a node who is in the cluster, where they listen
// and what they run: memberlist (SWIM gossip) with a local table on top that
// tells a graceful leave from a failure and keeps dead members until the
// control group has moved their replicas away.
package membership
