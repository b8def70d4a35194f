package server

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

// Tracing (OpenTelemetry). A callback is one trace: its root span, "imbridge.callback", covers
// arrival to answer; its children are "imbridge.decode" (the request read into a message and an
// event), "imbridge.publish" (the event log's acknowledged write), "imbridge.verdicts" (waiting
// for deciders) and "imbridge.answer" (the vendor's answer written). The callback's trace context
// is stored in the event (Event.trace_context), so each "imbridge.deliver" span (the event sent to
// a subscriber) and a subscriber's own spans join the trace. With no tracer (the default), each
// place costs a nil check.

// traceContext is the W3C propagator: trace contexts in from HTTP headers and gRPC metadata, and
// into stored events.
var traceContext = propagation.TraceContext{}

// StartCallbackSpan starts a callback's root span, at its arrival, as a child of the trace context
// the request carried if any (carrier: its HTTP headers or gRPC metadata). It returns ctx unchanged
// and a nil span when tracing is off.
func StartCallbackSpan(ctx context.Context, tracer trace.Tracer, carrier propagation.TextMapCarrier, vendor, transport string, received time.Time) (context.Context, trace.Span) {
	if tracer == nil {
		return ctx, nil
	}
	ctx = traceContext.Extract(ctx, carrier)
	return tracer.Start(ctx, "imbridge.callback", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(received),
		trace.WithAttributes(attribute.String("imbridge.vendor", vendor), attribute.String("imbridge.transport", transport)))
}

// EndCallbackSpan ends a callback's root span with what its record says: an "imbridge.answer"
// child from the answer's making to now, and the callback's attributes (the ids the IM servers
// log: OpenIM's operationID, Tencent's RequestID).
func EndCallbackSpan(span trace.Span, tracer trace.Tracer, ctx context.Context, r *CallRecord) {
	if span == nil {
		return
	}
	o, cmd, answer, _, _ := r.resolve()
	now := time.Now()
	if !o.answered.IsZero() {
		_, answer := tracer.Start(ctx, "imbridge.answer", trace.WithTimestamp(o.answered))
		answer.End(trace.WithTimestamp(now))
	}
	attrs := []attribute.KeyValue{
		attribute.String("imbridge.command", cmd),
		attribute.String("imbridge.answer", answer),
		attribute.Int("http.response.status_code", r.Status),
	}
	if o.EventID != "" {
		attrs = append(attrs, attribute.String("imbridge.event_id", o.EventID))
	}
	if o.OperationID != "" {
		attrs = append(attrs, attribute.String("openim.operation_id", o.OperationID))
	}
	if o.RequestID != "" {
		attrs = append(attrs, attribute.String("tencent.request_id", o.RequestID))
	}
	span.SetAttributes(attrs...)
	if r.Status >= 500 {
		span.SetStatus(codes.Error, r.Err)
	}
	span.End(trace.WithTimestamp(now))
}

// decoded records, for tracing, that the callback's request became an event: the "imbridge.decode"
// span, from the request's handoff to the services until now.
func (s *Server) decoded(ctx context.Context, o *Outcome) {
	if s.tracer == nil {
		return
	}
	if o != nil && !o.decodeStart.IsZero() {
		_, span := s.tracer.Start(ctx, "imbridge.decode", trace.WithTimestamp(o.decodeStart))
		span.End()
	}
}

// MarkDecodeStart notes when the services were handed the request, for the decode span.
func (o *Outcome) MarkDecodeStart() { o.decodeStart = time.Now() }

// startSpan starts a child span of a callback's; nil when tracing is off.
func (s *Server) startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) trace.Span {
	if s.tracer == nil {
		return nil
	}
	_, span := s.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
	return span
}

func endSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// maxTraceState is the longest tracestate stored (W3C Trace Context: vendors may cut it at 512).
const maxTraceState = 512

// injectTraceContext stores the callback's trace context in its event.
func (s *Server) injectTraceContext(ctx context.Context, tc *map[string]string) {
	if s.tracer == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	m := map[string]string{}
	traceContext.Inject(ctx, propagation.MapCarrier(m))
	if len(m["tracestate"]) > maxTraceState { // the caller's, stored in every event: bounded
		delete(m, "tracestate")
	}
	*tc = m
}

// deliverSpan starts the span of one event sent to a subscriber, in the event's trace; nil when
// tracing is off or the event carries no trace context.
func (s *Server) deliverSpan(tc map[string]string, group, eventID string, delivery uint64) trace.Span {
	if s.tracer == nil || len(tc) == 0 {
		return nil
	}
	ctx := traceContext.Extract(context.Background(), propagation.MapCarrier(tc))
	_, span := s.tracer.Start(ctx, "imbridge.deliver", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("imbridge.group", group), attribute.String("imbridge.event_id", eventID), attribute.Int64("imbridge.delivery", int64(delivery))))
	return span
}

// eventTraceContext reads Event.trace_context (field 11, a map) from a stored event without
// decoding the rest. The event passed checkEvent: it is well formed.
func eventTraceContext(b []byte) map[string]string {
	var m map[string]string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m
		}
		b = b[n:]
		if num != 11 || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return m
			}
			b = b[n:]
			continue
		}
		entry, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return m
		}
		b = b[n:]
		var key, value string
		for len(entry) > 0 {
			enum, etyp, en := protowire.ConsumeTag(entry)
			if en < 0 {
				break
			}
			entry = entry[en:]
			if etyp != protowire.BytesType {
				en = protowire.ConsumeFieldValue(enum, etyp, entry)
				if en < 0 {
					break
				}
				entry = entry[en:]
				continue
			}
			v, en := protowire.ConsumeBytes(entry)
			if en < 0 {
				break
			}
			entry = entry[en:]
			switch enum {
			case 1:
				key = string(v)
			case 2:
				value = string(v)
			}
		}
		if m == nil {
			m = map[string]string{}
		}
		m[key] = value
	}
	return m
}

// MetadataCarrier lets the propagator read a gRPC call's incoming metadata.
type MetadataCarrier metadata.MD

func (c MetadataCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c MetadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c MetadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
