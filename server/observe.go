package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// How a callback was answered: the answer label of imbridge_callbacks_total and the access log's.
const (
	AnswerOK              = "ok"             // stored; for a callback that waited, every decider allowed
	AnswerDuplicate       = "duplicate"      // OK: a retry of a callback stored already (dedup.go)
	AnswerRefused         = "refused"        // a decider refused
	AnswerFailurePolicy   = "failure_policy" // no decider connected, or not every one answered in time
	AnswerBadRequest      = "bad_request"    // the request could not be read (400, 404, 405)
	AnswerUnauthenticated = "unauthenticated"
	AnswerForbidden       = "forbidden"
	AnswerTooLarge        = "too_large"
	AnswerUnavailable     = "unavailable" // the event log could not take the write
	AnswerError           = "error"
)

// Outcome is what handling a callback found out, for the transport that reports it (Record): the
// gateway for HTTP, CallbackInterceptor for gRPC.
type Outcome struct {
	Answer  string // one of the Answer constants; "" until the callback is answered
	Why     string // for a refusal, the failure policy or an error: the reason
	EventID string
	Command string
	Phase   pb.Phase
	// OperationID is OpenIM's operationID, RequestID Tencent's RequestID.
	OperationID, RequestID string

	decodeStart, answered time.Time // for tracing (trace.go)
}

type outcomeKey struct{}

// WithOutcome returns ctx carrying o, which the callback services fill in.
func WithOutcome(ctx context.Context, o *Outcome) context.Context {
	return context.WithValue(ctx, outcomeKey{}, o)
}

func outcomeFrom(ctx context.Context) *Outcome {
	o, _ := ctx.Value(outcomeKey{}).(*Outcome)
	return o
}

// noteEvent records the event a callback became; o may be nil (nobody records the callback).
func (o *Outcome) noteEvent(ev *pb.Event) {
	if o != nil {
		o.EventID, o.Command, o.Phase = ev.Id, ev.Command, ev.Phase
		o.OperationID, o.RequestID = ev.GetMetadata().GetOperationId(), ev.GetMetadata().GetRequestId()
	}
}

// noteAnswer records how a callback was answered (and when, for the answer span if traced).
func (o *Outcome) noteAnswer(answer, why string, traced bool) {
	if o != nil {
		o.Answer, o.Why = answer, why
		if traced {
			o.answered = time.Now()
		}
	}
}

// CallRecord is one answered callback, as its transport saw it.
type CallRecord struct {
	Vendor    string // "openim" or "tencent"
	Transport string // "http" or "grpc"
	Command   string // as the transport read it; "" when the caller was refused before it was read
	Status    int    // the HTTP status, or for gRPC the status code's HTTP equivalent
	Err       string // what the error answer said
	Remote    string
	Latency   time.Duration // from the request's arrival to its answer
	Outcome   *Outcome      // as the services filled it in
}

// Record counts an answered callback (imbridge_callbacks_total, imbridge_callback_duration_seconds)
// and writes its access line at info. Secrets never reach it: the command is the one read after
// the caller's checks, and no header is logged.
func (s *Server) Record(ctx context.Context, r *CallRecord) {
	o, cmd, answer, why, phase := r.resolve()
	s.metrics.callback(r.Vendor, commandLabel(cmd), phaseLabel(phase), answer, r.Latency)
	// A callback not answered OK (refused callers, bad input, the log unavailable) is logged at warn,
	// access log or not.
	level := slog.LevelInfo
	if r.Status != http.StatusOK {
		level = slog.LevelWarn
	}
	if level == slog.LevelInfo && !s.accessLog || !s.logger.Enabled(ctx, level) {
		return
	}
	if len(cmd) > MaxCommandBytes { // a refused name, as sent
		cmd = fmt.Sprintf("%s... (%d bytes)", strings.ToValidUTF8(cmd[:MaxCommandBytes], "?"), len(cmd))
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("vendor", r.Vendor), slog.String("command", cmd), slog.String("phase", phaseLabel(phase)),
		slog.Int("status", r.Status), slog.String("answer", answer), slog.Duration("latency", r.Latency),
		slog.String("remote", r.Remote), slog.String("transport", r.Transport))
	if why != "" {
		attrs = append(attrs, slog.String("why", why))
	}
	if o.OperationID != "" {
		attrs = append(attrs, slog.String("operation_id", o.OperationID))
	}
	if o.RequestID != "" {
		attrs = append(attrs, slog.String("request_id", o.RequestID))
	}
	if o.EventID != "" {
		attrs = append(attrs, slog.String("event", o.EventID))
	}
	s.logger.LogAttrs(ctx, level, "callback", attrs...)
}

// resolve reads a record: its outcome (never nil), command, answer, why and phase, from what the
// services found out where they got that far, else from what the transport saw.
func (r *CallRecord) resolve() (o *Outcome, cmd, answer, why string, phase pb.Phase) {
	o = r.Outcome
	if o == nil {
		o = &Outcome{}
	}
	cmd = o.Command
	if cmd == "" {
		cmd = r.Command
	}
	answer, why = o.Answer, o.Why
	if r.Status != http.StatusOK || answer == "" {
		answer, why = answerForStatus(r.Status), r.Err
	}
	phase = o.Phase
	if phase == pb.Phase_PHASE_UNSPECIFIED && cmd != "" {
		phase = phaseOf(r.Vendor, cmd)
	}
	return o, cmd, answer, why, phase
}

// answerForStatus classes an error answer by its HTTP status.
func answerForStatus(code int) string {
	switch {
	case code == http.StatusOK:
		return AnswerOK
	case code == http.StatusUnauthorized:
		return AnswerUnauthenticated
	case code == http.StatusForbidden:
		return AnswerForbidden
	case code == http.StatusRequestEntityTooLarge:
		return AnswerTooLarge
	case code == http.StatusServiceUnavailable:
		return AnswerUnavailable
	case code >= 400 && code < 500:
		return AnswerBadRequest
	}
	return AnswerError
}

// HTTPStatus is the HTTP status a callback service's gRPC status code is answered with: grpc-gateway's
// mapping, except ResourceExhausted, the callback services' "too large to store" (413).
func HTTPStatus(c codes.Code) int {
	if c == codes.ResourceExhausted {
		return http.StatusRequestEntityTooLarge
	}
	return runtime.HTTPStatusFromCode(c)
}

// commandLabel bounds the command label: a command no IM server is known to send is "other".
func commandLabel(cmd string) string {
	if knownCommand(cmd) {
		return cmd
	}
	return "other"
}

func phaseLabel(p pb.Phase) string {
	switch p {
	case pb.Phase_PHASE_BEFORE:
		return "before"
	case pb.Phase_PHASE_AFTER:
		return "after"
	}
	return "unknown"
}

func phaseOf(vendor, cmd string) pb.Phase {
	if vendor == "tencent" {
		return tencentPhase(cmd)
	}
	return openimPhase(cmd)
}

// Full method name prefixes of the callback services.
var (
	openimServicePrefix  = "/" + pb.OpenIMCallbackService_ServiceDesc.ServiceName + "/"
	tencentServicePrefix = "/" + pb.TencentCallbackService_ServiceDesc.ServiceName + "/"
)

// CallbackInterceptor records callbacks posted over gRPC as the gateway records those over HTTP.
// It goes before authentication, so that a refused caller is recorded too.
func (s *Server) CallbackInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		var vendor string
		switch {
		case strings.HasPrefix(info.FullMethod, openimServicePrefix):
			vendor = "openim"
		case strings.HasPrefix(info.FullMethod, tencentServicePrefix):
			vendor = "tencent"
		default:
			return handler(ctx, req)
		}
		start := time.Now()
		o := &Outcome{decodeStart: start}
		md, _ := metadata.FromIncomingContext(ctx)
		sctx, span := StartCallbackSpan(ctx, s.tracer, MetadataCarrier(md), vendor, "grpc", start)
		resp, err := handler(WithOutcome(sctx, o), req)
		rec := &CallRecord{Vendor: vendor, Transport: "grpc", Outcome: o, Latency: time.Since(start)}
		st := status.Convert(err)
		rec.Status = HTTPStatus(st.Code())
		if err != nil {
			rec.Err = st.Message()
		}
		if c, ok := req.(interface{ GetCommand() string }); ok {
			rec.Command = c.GetCommand()
		}
		if c, ok := req.(interface{ GetCallbackCommand() string }); ok && rec.Command == "" {
			rec.Command = c.GetCallbackCommand()
		}
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			rec.Remote = p.Addr.String()
		}
		s.Record(ctx, rec)
		EndCallbackSpan(span, s.tracer, sctx, rec)
		return resp, err
	}
}
