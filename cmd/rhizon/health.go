package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthCmd queries the standard gRPC health service of a node. It needs no
// token, so container health checks and probes can run it. "" and every
// service the node serves ("rhizon.v1.Gateway", "rhizon.v1.Admin", ...) are
// SERVING while the node is READY or DEGRADED and NOT_SERVING when it is
// FAILED; /readyz says why, /healthz is liveness.
func healthCmd() *cobra.Command {
	var addr, service string
	var timeout time.Duration
	var tf tlsClientFlags
	c := &cobra.Command{
		Use:   "health",
		Short: "Check a node through the gRPC health service (exit 0 when SERVING: READY or DEGRADED)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := applyConfig(c.Flags()); err != nil {
				return &exitErr{exitUsage, err}
			}
			addr = withDefaultPort(addr)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			resp, err := healthStatus(ctx, addr, &tf, service)
			if err != nil {
				return &exitErr{exitError, explain(addr, err)}
			}
			fmt.Fprintln(c.OutOrStdout(), resp.GetStatus())
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return &exitErr{exitError, fmt.Errorf("health %s service %q: %s", addr, service, resp.GetStatus())}
			}
			return nil
		},
	}
	fs := c.Flags()
	fs.StringVar(&addr, "addr", "127.0.0.1:7400", "node gRPC address (RHIZON_ADDR)")
	fs.StringVar(&service, "service", "", `health service: "" (the server) or a service it serves ("rhizon.v1.Gateway", "rhizon.v1.Admin", ...); all SERVING unless the node is FAILED`)
	fs.DurationVar(&timeout, "timeout", 3*time.Second, "deadline for the check")
	tf.register(fs)
	return c
}

// healthStatus asks the node at addr for the health of service.
func healthStatus(ctx context.Context, addr string, tf *tlsClientFlags, service string) (*healthpb.HealthCheckResponse, error) {
	creds := insecure.NewCredentials()
	cfg, err := tf.config()
	if err != nil {
		return nil, &exitErr{exitUsage, err}
	}
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return nil, fmt.Errorf("health %s: %w", addr, err)
	}
	return resp, nil
}

// checkHealth is nil when service is SERVING at addr.
func checkHealth(ctx context.Context, addr string, tf *tlsClientFlags, service string) error {
	resp, err := healthStatus(ctx, addr, tf, service)
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("node %s is not ready (health %s: %s; its /readyz says why)", addr, service, resp.GetStatus())
	}
	return nil
}
