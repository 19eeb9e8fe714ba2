// Package telemetry sets up OpenTelemetry for a node: metrics exported for
// Prometheus (served at /metrics), traces over OTLP when an endpoint is
// configured, and W3C trace-context propagation.
package telemetry

import (
	"context"
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Config says where telemetry goes.
type Config struct {
	ServiceName string
	NodeID      string
	// OTLPEndpoint (host:port, insecure gRPC) receives traces; empty
	// samples only what callers sampled, and exports nothing (the trace
	// context still reaches commands and events).
	OTLPEndpoint string
}

// Telemetry holds the providers; Shutdown flushes them.
type Telemetry struct {
	registry *prometheus.Registry
	mp       *sdkmetric.MeterProvider
	tp       *sdktrace.TracerProvider
}

// Setup installs global meter and tracer providers and the propagator.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	res := resource.NewSchemaless(
		semconv.ServiceName(cfg.ServiceName),
		semconv.ServiceInstanceID(cfg.NodeID),
	)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	// Without an exporter nobody reads a span: start none of our own (each
	// costs allocations and attributes on every command of every replica),
	// and record only those whose caller asked for sampling, so the trace
	// context and its sampled flag still pass through to commands and events.
	sampler := sdktrace.ParentBased(sdktrace.NeverSample())
	if cfg.OTLPEndpoint != "" {
		sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	if cfg.OTLPEndpoint != "" {
		te, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint), otlptracegrpc.WithInsecure())
		if err != nil {
			return nil, err
		}
		topts = append(topts, sdktrace.WithBatcher(te))
	}
	tp := sdktrace.NewTracerProvider(topts...)
	otel.SetMeterProvider(mp)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return &Telemetry{registry: reg, mp: mp, tp: tp}, nil
}

// MetricsHandler serves the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.tp.Shutdown(ctx), t.mp.Shutdown(ctx))
}
