package shard

// LeaseFor exposes the lease a quorum ack buys, for the tests' bounds.
var LeaseFor = leaseFor
