package telemetry

import (
	"context"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/rhizon/rhizon/internal/otlptest"
	"github.com/rhizon/rhizon/internal/testcerts"
)

// keepGlobals restores the global providers Setup replaces.
func keepGlobals(t *testing.T) {
	prevTP, prevMP, prevProp := otel.GetTracerProvider(), otel.GetMeterProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetMeterProvider(prevMP)
		otel.SetTextMapPropagator(prevProp)
	})
}

// clearOTELEnv unsets every OTEL_ variable the host may have set, for t.
func clearOTELEnv(t *testing.T) {
	for _, k := range []string{
		"OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
		"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_CERTIFICATE",
	} {
		t.Setenv(k, "")
	}
}

// emit records one root span and one counter increment, then flushes both
// providers through Shutdown (which exports whatever is pending).
func emit(t *testing.T, tel *Telemetry) trace.SpanContext {
	t.Helper()
	_, span := otel.Tracer("test").Start(context.Background(), "test.span")
	sc := span.SpanContext()
	span.End()
	c, err := otel.Meter("test").Int64Counter("test.counter")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(context.Background(), 1)
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown (exports pending spans and metrics): %v", err)
	}
	return sc
}

func spanNamed(r *otlptest.Receiver, name string) (otlptest.Span, bool) {
	for _, s := range r.Spans() {
		if s.Name == name {
			return s, true
		}
	}
	return otlptest.Span{}, false
}

// The standard variables alone (no flag) send traces and metrics over
// OTLP/gRPC with TLS, the configured headers, and the resource from
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
func TestOTLPGRPCWithTLSHeadersAndResourceFromEnv(t *testing.T) {
	keepGlobals(t)
	clearOTELEnv(t)
	certs := testcerts.Write(t)
	r := otlptest.Start(t, testcerts.Config(t, certs, certs.CA))
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://"+r.GRPCAddr)
	t.Setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", certs.CA)
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant-key=secret-1")
	t.Setenv("OTEL_SERVICE_NAME", "rhizon-east")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")

	tel, err := Setup(context.Background(), Config{ServiceName: "rhizon", NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tel.Summary, "traces over OTLP grpc") || !strings.Contains(tel.Summary, "metrics over OTLP grpc") {
		t.Errorf("summary %q does not say traces and metrics go over OTLP/gRPC", tel.Summary)
	}
	sc := emit(t, tel)
	s, ok := spanNamed(r, "test.span")
	if !ok {
		t.Fatalf("no span reached the TLS receiver; got %v", r.Spans())
	}
	if s.TraceID != sc.TraceID().String() {
		t.Errorf("trace id %s, want %s", s.TraceID, sc.TraceID())
	}
	for k, want := range map[string]string{"service.name": "rhizon-east", "service.instance.id": "n1", "deployment.environment": "staging"} {
		if s.Resource[k] != want {
			t.Errorf("resource %s = %q, want %q (all: %v)", k, s.Resource[k], want, s.Resource)
		}
	}
	if !slices.Contains(r.Metrics(), "test.counter") {
		t.Errorf("metrics over OTLP: got %v, want test.counter among them", r.Metrics())
	}
	if got := r.Header("x-tenant-key"); got != "secret-1" {
		t.Errorf("OTEL_EXPORTER_OTLP_HEADERS: receiver saw x-tenant-key %q", got)
	}
}

// OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf sends both signals to the
// HTTP receiver's /v1/traces and /v1/metrics.
func TestOTLPHTTPProtobufFromEnv(t *testing.T) {
	keepGlobals(t)
	clearOTELEnv(t)
	r := otlptest.Start(t, nil)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.HTTPURL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	tel, err := Setup(context.Background(), Config{ServiceName: "rhizon", NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	emit(t, tel)
	if _, ok := spanNamed(r, "test.span"); !ok {
		t.Errorf("no span over OTLP/HTTP; got %v", r.Spans())
	}
	if !slices.Contains(r.Metrics(), "test.counter") {
		t.Errorf("metrics over OTLP/HTTP: got %v", r.Metrics())
	}
}

// The --otlp-endpoint flag wins over OTEL_EXPORTER_OTLP_ENDPOINT; host:port
// stays plaintext gRPC, as the flag always was.
func TestFlagEndpointOverridesEnv(t *testing.T) {
	keepGlobals(t)
	clearOTELEnv(t)
	flag, env := otlptest.Start(t, nil), otlptest.Start(t, nil)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+env.GRPCAddr)
	tel, err := Setup(context.Background(), Config{ServiceName: "rhizon", NodeID: "n1", OTLPEndpoint: flag.GRPCAddr})
	if err != nil {
		t.Fatal(err)
	}
	emit(t, tel)
	if _, ok := spanNamed(flag, "test.span"); !ok {
		t.Errorf("the flag's receiver got no span")
	}
	if n := len(env.Spans()); n != 0 {
		t.Errorf("the environment's receiver got %d spans; the flag should override it", n)
	}
}

// A signal-specific variable routes that signal only; OTEL_METRICS_EXPORTER
// =none keeps metrics on /metrics alone.
func TestSignalSpecificEndpointAndExporterNone(t *testing.T) {
	keepGlobals(t)
	clearOTELEnv(t)
	r := otlptest.Start(t, nil)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+r.GRPCAddr)
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	tel, err := Setup(context.Background(), Config{ServiceName: "rhizon", NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	emit(t, tel)
	if _, ok := spanNamed(r, "test.span"); !ok {
		t.Errorf("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: no span received")
	}
	if m := r.Metrics(); len(m) != 0 {
		t.Errorf("OTEL_METRICS_EXPORTER=none: metrics exported anyway: %v", m)
	}
}

// OTEL_TRACES_SAMPLER is honoured when an exporter is configured.
func TestSamplerFromEnv(t *testing.T) {
	keepGlobals(t)
	clearOTELEnv(t)
	r := otlptest.Start(t, nil)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+r.GRPCAddr)
	t.Setenv("OTEL_TRACES_SAMPLER", "traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0")
	tel, err := Setup(context.Background(), Config{ServiceName: "rhizon", NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if sc := emit(t, tel); sc.IsSampled() {
		t.Error("traceidratio 0 sampled a root span")
	}
	if n := len(r.Spans()); n != 0 {
		t.Errorf("%d spans exported with a sampling ratio of 0", n)
	}
}

// OTEL_SDK_DISABLED=true exports nothing even with an endpoint, and
// records no span of its own.
func TestSDKDisabled(t *testing.T) {
	keepGlobals(t)
	clearOTELEnv(t)
	r := otlptest.Start(t, nil)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+r.GRPCAddr)
	t.Setenv("OTEL_SDK_DISABLED", "true")
	tel, err := Setup(context.Background(), Config{ServiceName: "rhizon", NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if sc := emit(t, tel); sc.IsSampled() || !sc.IsValid() {
		t.Errorf("disabled SDK: root span context %v, want valid and unsampled", sc)
	}
	if n, m := len(r.Spans()), len(r.Metrics()); n+m != 0 {
		t.Errorf("disabled SDK exported %d spans and %d metrics", n, m)
	}
}

func TestUnknownProtocolIsAClearError(t *testing.T) {
	keepGlobals(t)
	clearOTELEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	_, err := Setup(context.Background(), Config{ServiceName: "rhizon", NodeID: "n1"})
	if err == nil || !strings.Contains(err.Error(), `"http/json"`) || !strings.Contains(err.Error(), "http/protobuf") {
		t.Fatalf("err = %v, want one naming the bad protocol and the supported ones", err)
	}
}

// An endpoint variable without a scheme would be dropped by the exporter
// (which then sends to localhost): refuse it, saying what to write.
func TestSchemelessEnvEndpointIsAClearError(t *testing.T) {
	keepGlobals(t)
	clearOTELEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317")
	_, err := Setup(context.Background(), Config{ServiceName: "rhizon", NodeID: "n1"})
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_ENDPOINT") || !strings.Contains(err.Error(), "http://host:port") {
		t.Fatalf("err = %v, want one naming the variable and the URL form", err)
	}
}

// A flag given as an https:// URL is TLS (trusting OTEL_EXPORTER_OTLP_
// CERTIFICATE); with http/protobuf the signal paths are added to it.
func TestFlagURLFollowsSchemeAndProtocol(t *testing.T) {
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(strings.ReplaceAll(proto, "/", "-"), func(t *testing.T) {
			keepGlobals(t)
			clearOTELEnv(t)
			certs := testcerts.Write(t)
			r := otlptest.Start(t, testcerts.Config(t, certs, certs.CA))
			t.Setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", certs.CA)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", proto)
			flag := "https://" + r.GRPCAddr
			if proto == ProtocolHTTP {
				flag = r.HTTPURL
			}
			tel, err := Setup(context.Background(), Config{ServiceName: "rhizon", NodeID: "n1", OTLPEndpoint: flag})
			if err != nil {
				t.Fatal(err)
			}
			emit(t, tel)
			if _, ok := spanNamed(r, "test.span"); !ok {
				t.Errorf("no span reached the TLS receiver at %s", flag)
			}
			if !slices.Contains(r.Metrics(), "test.counter") {
				t.Errorf("no metric reached the TLS receiver at %s", flag)
			}
		})
	}
}
