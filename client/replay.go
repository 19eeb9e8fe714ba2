package client

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Replay asks for a replay of one entity's shard (req.address: any token
// that may read the entity; tenant and workspace default to the client's)
// or of a whole shard (req.shard: role admin), and returns its report. An
// entity's replay goes to the shard leader's gateway when the client knows
// it, where it runs without a hop. Unavailable answers are retried: a
// replay changes nothing. It re-executes the shard's whole log, so give
// ctx minutes, not seconds.
func (c *Client) Replay(ctx context.Context, req *pb.ReplayRequest, opts ...grpc.CallOption) (*pb.ReplayReport, error) {
	send := req
	addr := req.GetAddress()
	if addr != nil {
		if filled := c.fillAddress(addr); filled != addr {
			addr = filled
			send = &pb.ReplayRequest{Scope: &pb.ReplayRequest_Address{Address: filled}}
		}
	}
	var resp *pb.ReplayReport
	err := c.retry(ctx, func() error {
		var err error
		if addr == nil {
			resp, err = c.anyGateway().Replay(ctx, send, opts...)
			return err
		}
		gw, rc := c.target(addr, true)
		resp, err = gw.Replay(ctx, send, rc.callOptions(opts)...)
		rc.finish(err)
		return err
	})
	return resp, err
}
