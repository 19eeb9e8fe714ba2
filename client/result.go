package client

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// GetResult reads the stored result of the command submitted to
// req.Address under req.IdempotencyKey, retrying while the shard has no
// leader. NotFound means no command with that key was applied there (yet).
func (c *Client) GetResult(ctx context.Context, req *pb.GetResultRequest, opts ...grpc.CallOption) (*pb.GetResultResponse, error) {
	send := req
	if addr := c.fillAddress(req.GetAddress()); addr != req.GetAddress() {
		send = &pb.GetResultRequest{Address: addr, IdempotencyKey: req.GetIdempotencyKey(), Consistency: req.GetConsistency()}
	}
	route := send.GetConsistency() != pb.Consistency_CONSISTENCY_STALE
	var resp *pb.GetResultResponse
	err := c.retry(ctx, func() error {
		gw, rc := c.target(send.GetAddress(), route)
		var err error
		resp, err = gw.GetResult(ctx, send, rc.callOptions(opts)...)
		rc.finish(err)
		return err
	})
	return resp, err
}
