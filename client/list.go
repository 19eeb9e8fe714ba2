package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// List returns one page of a document type's documents (see the Gateway's
// List). Tenant and workspace default to the client's. Any gateway serves
// it: it reads every shard through that shard's leader.
func (c *Client) List(ctx context.Context, req *pb.ListRequest, opts ...grpc.CallOption) (*pb.ListResponse, error) {
	send := req
	if (req.GetTenant() == "" && c.opts.tenant != "") || (req.GetWorkspace() == "" && c.opts.workspace != "") {
		send = proto.Clone(req).(*pb.ListRequest)
		if send.Tenant == "" {
			send.Tenant = c.opts.tenant
		}
		if send.Workspace == "" {
			send.Workspace = c.opts.workspace
		}
	}
	var resp *pb.ListResponse
	err := c.retry(ctx, func() error {
		var err error
		resp, err = c.anyGateway().List(ctx, send, opts...)
		return err
	})
	return resp, err
}
