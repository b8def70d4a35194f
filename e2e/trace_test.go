package e2e

import (
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/imbridge/imbridge/examples"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
	"github.com/imbridge/imbridge/server"
)

// TestTracing: a callback is one trace, joined to the trace context its request carried: the
// callback's span with the decode, publish, verdict and answer spans under it, and a delivery span
// for each event sent; the stored event carries the trace context to the subscriber.
func TestTracing(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	b := bridgetest.Start(t, bridgetest.Options{Tracer: tp.Tracer("test"),
		Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(15 * time.Second)}}})
	decider := b.Subscribe(t, &pb.Subscription{Group: "mods", Decide: true})
	// A filter the subject cannot express: its member decodes each event (the other delivery path).
	audit := b.Subscribe(t, &pb.Subscription{Group: "audit", Filter: &pb.EventFilter{GroupIds: []string{"G002"}}})

	const parentTrace, parentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ex := examples.Must("openim-before-set-group-info-ex")
	ch := make(chan answer, 1)
	go func() {
		status, out, err := b.Do(http.MethodPost, beforeEx, http.Header{
			"Traceparent": {"00-" + parentTrace + "-" + parentSpan + "-01"},
			"OperationID": {"op-7"},
		}, ex.Body)
		ch <- answer{status, string(out), err}
	}()
	ev := decider.Next()
	if tp := ev.GetTraceContext()["traceparent"]; len(tp) != 55 || tp[3:35] != parentTrace {
		t.Errorf("event trace context %v; want the callback's, in trace %s", ev.GetTraceContext(), parentTrace)
	}
	decider.Decide(ev.Id, &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW})
	if a := waitAnswer(t, ch); a.status != http.StatusOK {
		t.Fatalf("answer %d %s", a.status, a.body)
	}
	if got := audit.Next(); got.Id != ev.Id {
		t.Fatalf("audit got %s; want %s", got.Id, ev.Id)
	}

	byName := map[string][]sdktrace.ReadOnlySpan{}
	bridgetest.WaitFor(t, "the callback's and both deliveries' spans", func() bool {
		clear(byName)
		for _, s := range rec.Ended() {
			byName[s.Name()] = append(byName[s.Name()], s)
		}
		return len(byName["imbridge.callback"]) == 1 && len(byName["imbridge.deliver"]) == 2
	})
	root := byName["imbridge.callback"][0]
	if root.SpanContext().TraceID().String() != parentTrace || root.Parent().SpanID().String() != parentSpan {
		t.Errorf("callback span in trace %s under %s; want the request's trace context", root.SpanContext().TraceID(), root.Parent().SpanID())
	}
	if root.SpanKind() != trace.SpanKindServer {
		t.Errorf("callback span kind %v", root.SpanKind())
	}
	attrs := map[attribute.Key]string{}
	for _, kv := range root.Attributes() {
		attrs[kv.Key] = kv.Value.Emit()
	}
	for k, want := range map[attribute.Key]string{
		"imbridge.vendor": "openim", "imbridge.command": "callbackBeforeSetGroupInfoExCommand", "imbridge.answer": "ok",
		"openim.operation_id": "op-7", "imbridge.event_id": ev.Id, "http.response.status_code": "200",
	} {
		if attrs[k] != want {
			t.Errorf("callback span %s = %q; want %q", k, attrs[k], want)
		}
	}
	for _, name := range []string{"imbridge.decode", "imbridge.publish", "imbridge.verdicts", "imbridge.answer"} {
		spans := byName[name]
		if len(spans) != 1 || spans[0].Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("%s: %d spans; want one under the callback's", name, len(spans))
		}
	}
	for _, d := range byName["imbridge.deliver"] {
		if d.Parent().SpanID() != root.SpanContext().SpanID() || d.SpanKind() != trace.SpanKindProducer {
			t.Errorf("delivery span %v under %s; want a producer span under the callback's", d.Attributes(), d.Parent().SpanID())
		}
	}
}

// TestTracingOff: without a tracer, events carry no trace context.
func TestTracingOff(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "g"})
	body := examples.Must("openim-after-quit-group").Body
	if status, out := b.Post(t, http.MethodPost, "/openim/callbackAfterQuitGroupCommand", http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}, body); status != http.StatusOK {
		t.Fatalf("post: %d %s", status, out)
	}
	if ev := sub.Next(); len(ev.GetTraceContext()) != 0 {
		t.Errorf("trace context %v with tracing off; want none", ev.GetTraceContext())
	}
}
