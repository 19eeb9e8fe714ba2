package client

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// RepublishEvents asks any gateway to publish one shard's committed events
// again to the events stream (rhizon.v1.Admin; a token with role admin).
// The gateway routes it to the shard's leader. Unavailable answers are
// retried like Drain's: republishing is idempotent (same message ids).
func (c *Client) RepublishEvents(ctx context.Context, req *pb.RepublishEventsRequest, opts ...grpc.CallOption) (*pb.RepublishEventsResponse, error) {
	var resp *pb.RepublishEventsResponse
	err := c.retry(ctx, func() error {
		var err error
		resp, err = pb.NewAdminClient(c.anySeed().conns[0]).RepublishEvents(ctx, req, opts...)
		return err
	})
	return resp, err
}

// anySeed is the endpoint anyGateway would pick.
func (c *Client) anySeed() *endpoint {
	if len(c.seeds) == 1 {
		return c.seeds[0]
	}
	n := uint32(len(c.seeds))
	start := c.next.Add(1)
	for i := range n {
		if ep := c.seeds[(start+i)%n]; !ep.failing() {
			return ep
		}
	}
	return c.seeds[start%n]
}

// ActivateRevision switches an actor type to a code revision
// (rhizon.v1.Admin; a token with role admin). Unavailable answers are
// retried: activating the revision already active changes nothing.
func (c *Client) ActivateRevision(ctx context.Context, req *pb.ActivateRevisionRequest, opts ...grpc.CallOption) (*pb.ActivateRevisionResponse, error) {
	var resp *pb.ActivateRevisionResponse
	err := c.retry(ctx, func() error {
		var err error
		resp, err = pb.NewAdminClient(c.anySeed().conns[0]).ActivateRevision(ctx, req, opts...)
		return err
	})
	return resp, err
}

// DeployActor stores a WebAssembly module as a revision of an actor type
// (rhizon.v1.Admin.DeployActor). Unavailable answers are retried: deploying
// the same module as the same revision again changes nothing.
func (c *Client) DeployActor(ctx context.Context, req *pb.DeployActorRequest, opts ...grpc.CallOption) (*pb.DeployActorResponse, error) {
	var resp *pb.DeployActorResponse
	err := c.retry(ctx, func() error {
		var err error
		resp, err = pb.NewAdminClient(c.anySeed().conns[0]).DeployActor(ctx, req, opts...)
		return err
	})
	return resp, err
}

// ListDeadLetters reads one page of the dead-letter stream, oldest first,
// after sequence req.After (rhizon.v1.Admin; a token with role admin).
// Unavailable answers are retried: listing reads only.
func (c *Client) ListDeadLetters(ctx context.Context, req *pb.ListDeadLettersRequest, opts ...grpc.CallOption) (*pb.ListDeadLettersResponse, error) {
	var resp *pb.ListDeadLettersResponse
	err := c.retry(ctx, func() error {
		var err error
		resp, err = pb.NewAdminClient(c.anySeed().conns[0]).ListDeadLetters(ctx, req, opts...)
		return err
	})
	return resp, err
}

// RedriveDeadLetter publishes a poison dead letter's command again
// (rhizon.v1.Admin; a token with role admin). Unavailable answers are
// retried: the node publishes a redrive under a message id derived from the
// letter's sequence, so JetStream stores a retry once within its duplicate
// window, and the command keeps its idempotency key beyond it.
func (c *Client) RedriveDeadLetter(ctx context.Context, req *pb.RedriveDeadLetterRequest, opts ...grpc.CallOption) (*pb.RedriveDeadLetterResponse, error) {
	var resp *pb.RedriveDeadLetterResponse
	err := c.retry(ctx, func() error {
		var err error
		resp, err = pb.NewAdminClient(c.anySeed().conns[0]).RedriveDeadLetter(ctx, req, opts...)
		return err
	})
	return resp, err
}
