package app

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// tracing is off unless the standard OpenTelemetry environment asks for an OTLP exporter:
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, or OTEL_TRACES_EXPORTER=otlp.
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none keeps it off. The exporter takes its
// endpoint, headers, TLS and timeout from the OTEL_EXPORTER_OTLP_* variables, its protocol from
// OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL (http/protobuf by default, as the specification says, or
// grpc); the sampler from OTEL_TRACES_SAMPLER(_ARG); the service name and resource from
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (default service name imbridge).
func tracingWanted() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER")) {
	case "none":
		return false
	case "otlp":
		return true
	case "":
	default:
		return false // an exporter the bridge does not ship: newTracer reports it
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// newTracer returns the bridge's tracer and the function that flushes and stops it, or a nil
// tracer when tracing is off.
func newTracer(ctx context.Context, version string) (trace.Tracer, func(context.Context) error, error) {
	if e := strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER")); e != "" && e != "otlp" && e != "none" {
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: the bridge exports traces over OTLP only (otlp or none)", e)
	}
	if !tracingWanted() {
		return nil, nil, nil
	}
	protocol := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp sdktrace.SpanExporter
	var err error
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: want http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	res, err := resource.Merge(
		resource.NewSchemaless(attribute.String("service.name", "imbridge"), attribute.String("service.version", version)),
		resource.Environment(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, nil, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp.Tracer("github.com/imbridge/imbridge"), tp.Shutdown, nil
}
