// Package telemetry sets up OpenTelemetry for a node: metrics exported for
// Prometheus (served at /metrics) and, when an OTLP endpoint is configured,
// over OTLP too; traces over OTLP; W3C trace-context propagation.
//
// Configuration follows the standard OTEL_* environment variables (see
// README "Operations"); the exporters read endpoint, headers, TLS, timeout
// and compression themselves. The --otlp-endpoint flag overrides the
// endpoint variables.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Config says where telemetry goes.
type Config struct {
	ServiceName string // default service.name; OTEL_SERVICE_NAME wins
	NodeID      string
	// OTLPEndpoint (the --otlp-endpoint flag) overrides the OTEL endpoint
	// variables for traces and metrics: host:port is plaintext (as the flag
	// always was), a URL follows its scheme (https:// is TLS). Empty leaves
	// the endpoint to OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT; with
	// none of them set nothing is exported (the trace context still
	// reaches commands and events).
	OTLPEndpoint string
}

// Protocols of OTEL_EXPORTER_OTLP_PROTOCOL.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// Telemetry holds the providers; Shutdown flushes them.
type Telemetry struct {
	registry *prometheus.Registry
	mp       *sdkmetric.MeterProvider
	tp       *sdktrace.TracerProvider
	// Summary says what is exported where, for the node's start-up log.
	Summary string
}

// signal is the resolved OTLP set-up of traces or metrics.
type signal struct {
	name     string // "traces" or "metrics"
	endpoint string // the flag's, or "" to let the exporter read the env
	protocol string
	from     string // where the endpoint came from, for Summary
}

// resolve decides whether a signal is exported and how. Signal-specific
// variables win over the general ones, and the flag over both.
func resolve(name, flag string) (signal, bool, error) {
	up := strings.ToUpper(name)
	if strings.EqualFold(os.Getenv("OTEL_"+up+"_EXPORTER"), "none") {
		return signal{}, false, nil
	}
	s := signal{name: name, endpoint: flag, from: "--otlp-endpoint"}
	if flag == "" {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_" + up + "_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
			if v := os.Getenv(k); v != "" {
				// The exporters silently fall back to localhost for a
				// value that does not parse as a URL (127.0.0.1:4317).
				if !isURL(v) {
					return signal{}, false, fmt.Errorf("telemetry: %s=%q: give a URL: http://host:port (plaintext) or https://host:port (TLS)", k, v)
				}
				s.from = k
				break
			}
		}
		if s.from == "--otlp-endpoint" {
			return signal{}, false, nil
		}
	}
	s.protocol = ProtocolGRPC // the flag's protocol before there were variables
	for _, k := range []string{"OTEL_EXPORTER_OTLP_" + up + "_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := os.Getenv(k); v != "" {
			s.protocol = v
			break
		}
	}
	if s.protocol != ProtocolGRPC && s.protocol != ProtocolHTTP {
		return signal{}, false, fmt.Errorf("telemetry: OTLP protocol %q for %s is not supported; use %q or %q", s.protocol, name, ProtocolGRPC, ProtocolHTTP)
	}
	return s, true, nil
}

// isURL reports whether the flag's endpoint names a scheme.
func isURL(e string) bool { return strings.Contains(e, "://") }

func (s signal) traceExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	if s.protocol == ProtocolHTTP {
		var opts []otlptracehttp.Option
		switch {
		case s.endpoint == "":
		case isURL(s.endpoint):
			opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(s.endpoint, "/")+"/v1/traces"))
		default:
			opts = append(opts, otlptracehttp.WithEndpoint(s.endpoint), otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, opts...)
	}
	var opts []otlptracegrpc.Option
	switch {
	case s.endpoint == "":
	case isURL(s.endpoint):
		opts = append(opts, otlptracegrpc.WithEndpointURL(s.endpoint))
	default:
		opts = append(opts, otlptracegrpc.WithEndpoint(s.endpoint), otlptracegrpc.WithInsecure())
	}
	return otlptracegrpc.New(ctx, opts...)
}

func (s signal) metricExporter(ctx context.Context) (sdkmetric.Exporter, error) {
	if s.protocol == ProtocolHTTP {
		var opts []otlpmetrichttp.Option
		switch {
		case s.endpoint == "":
		case isURL(s.endpoint):
			opts = append(opts, otlpmetrichttp.WithEndpointURL(strings.TrimSuffix(s.endpoint, "/")+"/v1/metrics"))
		default:
			opts = append(opts, otlpmetrichttp.WithEndpoint(s.endpoint), otlpmetrichttp.WithInsecure())
		}
		return otlpmetrichttp.New(ctx, opts...)
	}
	var opts []otlpmetricgrpc.Option
	switch {
	case s.endpoint == "":
	case isURL(s.endpoint):
		opts = append(opts, otlpmetricgrpc.WithEndpointURL(s.endpoint))
	default:
		opts = append(opts, otlpmetricgrpc.WithEndpoint(s.endpoint), otlpmetricgrpc.WithInsecure())
	}
	return otlpmetricgrpc.New(ctx, opts...)
}

func (s signal) String() string {
	at := s.endpoint
	if at == "" {
		at = os.Getenv(s.from)
	}
	return fmt.Sprintf("%s over OTLP %s to %s (from %s)", s.name, s.protocol, at, s.from)
}

// Setup installs global meter and tracer providers and the propagator.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	disabled := strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true")
	// Later detectors win: the defaults, then OTEL_RESOURCE_ATTRIBUTES and
	// OTEL_SERVICE_NAME.
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName), semconv.ServiceInstanceID(cfg.NodeID)),
		resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource (check OTEL_RESOURCE_ATTRIBUTES: key=value,...): %w", err)
	}
	var traces, metrics signal
	var tracesOn, metricsOn bool
	if !disabled {
		if traces, tracesOn, err = resolve("traces", cfg.OTLPEndpoint); err != nil {
			return nil, err
		}
		if metrics, metricsOn, err = resolve("metrics", cfg.OTLPEndpoint); err != nil {
			return nil, err
		}
	}
	t := &Telemetry{registry: prometheus.NewRegistry()}
	var summary []string
	t.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prom, err := otelprom.New(otelprom.WithRegisterer(t.registry))
	if err != nil {
		return nil, err
	}
	mopts := []sdkmetric.Option{sdkmetric.WithReader(prom), sdkmetric.WithResource(res)}
	if metricsOn {
		me, err := metrics.metricExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP metrics exporter: %w", err)
		}
		// The interval and timeout come from OTEL_METRIC_EXPORT_INTERVAL
		// and OTEL_METRIC_EXPORT_TIMEOUT.
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me)))
		summary = append(summary, metrics.String())
	}
	t.mp = sdkmetric.NewMeterProvider(mopts...)

	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if os.Getenv("OTEL_TRACES_SAMPLER") == "" || disabled || !tracesOn {
		// Without an exporter nobody reads a span: start none of our own
		// (each costs allocations and attributes on every command of every
		// replica), and record only those whose caller asked for sampling,
		// so the trace context and its sampled flag still pass through to
		// commands and events. With one, OTEL_TRACES_SAMPLER (read by the
		// SDK when we set none) may choose otherwise.
		sampler := sdktrace.ParentBased(sdktrace.NeverSample())
		if tracesOn {
			sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
		}
		topts = append(topts, sdktrace.WithSampler(sampler))
	}
	if tracesOn {
		te, err := traces.traceExporter(ctx)
		if err != nil {
			_ = t.mp.Shutdown(ctx)
			return nil, fmt.Errorf("telemetry: OTLP trace exporter: %w", err)
		}
		topts = append(topts, sdktrace.WithBatcher(te))
		summary = append(summary, traces.String())
	}
	t.tp = sdktrace.NewTracerProvider(topts...)
	otel.SetMeterProvider(t.mp)
	otel.SetTracerProvider(t.tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	switch {
	case disabled:
		t.Summary = "OTLP export off (OTEL_SDK_DISABLED=true); metrics at /metrics"
	case len(summary) == 0:
		t.Summary = "OTLP export off (no endpoint); metrics at /metrics"
	default:
		t.Summary = strings.Join(summary, "; ") + "; metrics also at /metrics"
	}
	return t, nil
}

// MetricsHandler serves the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.tp.Shutdown(ctx), t.mp.Shutdown(ctx))
}
