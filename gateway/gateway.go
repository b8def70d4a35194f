// Package gateway is the HTTP side of imbridge: the URLs IM servers post callbacks to. It is
// grpc-gateway's ServeMux, with the callback services registered in-process, inside a thin handler
// that does what the mux cannot: Tencent's dispatch on ?CallbackCommand=, OpenIM's "//command" paths,
// method and body-size checks, asking the auth package whether the caller is the IM server, and
// vendor-format error bodies. It does not store events or decide anything (the server package's
// work), nor hold credentials (auth's).
package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/imbridge/imbridge/auth"
	gw "github.com/imbridge/imbridge/gen/gateway/imbridge/v1"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bufpool"
	"github.com/imbridge/imbridge/server"
)

// DefaultMaxBodyBytes caps a callback body. Real group callbacks are well under 4 KiB; message
// callbacks carry a message and can be larger.
const DefaultMaxBodyBytes = 1 << 20

// MaxHeaderBytes bounds a request's line and headers (http.Server.MaxHeaderBytes). IM servers send a
// few hundred bytes; the bound keeps the request metadata stored with each event small.
const MaxHeaderBytes = 64 << 10

// Options configures New.
type Options struct {
	// OpenIM and Tencent are the callback services, called in-process. Required.
	OpenIM  pb.OpenIMCallbackServiceServer
	Tencent pb.TencentCallbackServiceServer
	// Ready answers GET /readyz: nil when callbacks can be stored. Nil: always ready.
	Ready func(context.Context) error
	// Metrics serves GET /metrics (Prometheus). Nil: 404.
	Metrics http.Handler
	// OpenAPI is served at GET /openapi.json. Nil: 404.
	OpenAPI []byte
	// MaxBodyBytes caps a callback body; larger ones get 413. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Auth checks that each callback comes from its IM server (OpenIM's Basic credentials, path
	// secret and addresses; Tencent's apps and Sign). Nil: callbacks are taken from anyone.
	Auth *auth.Rules
	// Record takes each answered callback, for metrics and the access log (server.Server.Record).
	// Nil: callbacks are neither counted nor logged.
	Record func(context.Context, *server.CallRecord)
	// Version is reported by /healthz.
	Version string
	// Tracer traces each recorded callback (server.StartCallbackSpan). Nil: tracing is off.
	Tracer trace.Tracer
	// Logger for requests that are not callbacks. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time
}

// Handler serves the callback routes, /healthz, /readyz, /metrics and /openapi.json.
type Handler struct {
	opts    Options
	mux     *runtime.ServeMux
	healthz []byte
}

// New builds the handler.
func New(ctx context.Context, opts Options) (*Handler, error) {
	if opts.OpenIM == nil || opts.Tencent == nil {
		return nil, errors.New("gateway: OpenIM and Tencent services are required")
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	version, _ := marshalJSONString(opts.Version)
	h := &Handler{opts: opts, healthz: append(append([]byte(`{"status":"ok","version":`), version...), '}')}
	h.mux = runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, vendorMarshaler{}),
		runtime.WithErrorHandler(h.rpcError),
		runtime.WithRoutingErrorHandler(h.routingError),
		// Request metadata reaches the services as server.CallInfo, not as gRPC metadata.
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
	)
	if err := gw.RegisterOpenIMCallbackServiceHandlerServer(ctx, h.mux, opts.OpenIM); err != nil {
		return nil, err
	}
	if err := gw.RegisterTencentCallbackServiceHandlerServer(ctx, h.mux, opts.Tencent); err != nil {
		return nil, err
	}
	return h, nil
}

// vendor is the IM server a route belongs to; it decides the error body's format.
type vendor int

const (
	vendorNone vendor = iota
	vendorOpenIM
	vendorTencent
)

func (v vendor) String() string {
	switch v {
	case vendorOpenIM:
		return "openim"
	case vendorTencent:
		return "tencent"
	}
	return "none"
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	received := h.opts.Now()
	path := cleanPath(r.URL.Path)
	first, rest, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	switch first {
	case "healthz":
		writeJSON(w, http.StatusOK, h.healthz)
		return
	case "readyz":
		h.readyz(w, r)
		return
	case "openapi.json":
		if h.opts.OpenAPI != nil && rest == "" {
			writeJSON(w, http.StatusOK, h.opts.OpenAPI)
			return
		}
		writeJSON(w, http.StatusNotFound, []byte(`{"error":"not found: no OpenAPI document here"}`))
	case "metrics":
		if h.opts.Metrics != nil && rest == "" {
			h.opts.Metrics.ServeHTTP(w, r)
			return
		}
		writeJSON(w, http.StatusNotFound, []byte(`{"error":"not found: no metrics here"}`))
	case "openim", "tencent":
		v := vendorOpenIM
		if first == "tencent" {
			v = vendorTencent
		}
		aw := &answerWriter{ResponseWriter: w, status: http.StatusOK}
		rec := &server.CallRecord{Vendor: v.String(), Transport: "http", Remote: r.RemoteAddr, Outcome: &server.Outcome{}}
		ctx, span := server.StartCallbackSpan(r.Context(), h.opts.Tracer, propagation.HeaderCarrier(r.Header), v.String(), "http", received)
		if span != nil {
			r = r.WithContext(ctx)
		}
		h.callback(aw, r, v, rest, received, rec)
		rec.Status, rec.Err, rec.Latency = aw.status, aw.err, h.opts.Now().Sub(received)
		if h.opts.Record != nil {
			h.opts.Record(ctx, rec)
		}
		server.EndCallbackSpan(span, h.opts.Tracer, ctx, rec)
	default:
		writeJSON(w, http.StatusNotFound, []byte(`{"error":"not found: IM servers post to /openim/{command} or /tencent"}`))
	}
}

// callback handles one callback; rec takes its command and outcome.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request, v vendor, rest string, received time.Time, rec *server.CallRecord) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, r, v, "", http.StatusMethodNotAllowed, "method "+r.Method+" not allowed: callbacks are POST")
		return
	}
	md := &pb.RequestMetadata{RemoteAddr: r.RemoteAddr}
	var command string
	switch v {
	case vendorOpenIM:
		// The header is "operationID"; Go canonicalizes it to "Operationid".
		md.OperationId = r.Header.Get("OperationID")
		command = rest
		if h.opts.Auth != nil {
			cmd, ref := h.opts.Auth.CheckOpenIM(r.RemoteAddr, r.Header, rest)
			if ref != nil {
				h.refuse(w, r, v, "", ref)
				return
			}
			command = cmd
		}
		if command == "" || strings.Contains(command, "/") {
			h.fail(w, r, v, "", http.StatusNotFound, "path must be /openim/{command}")
			return
		}
	case vendorTencent:
		q := r.URL.Query()
		md.SdkAppId, md.ClientIp, md.Platform, md.RequestId = q.Get("SdkAppid"), q.Get("ClientIP"), q.Get("OptPlatform"), q.Get("RequestID")
		command = q.Get("CallbackCommand")
		if command == "" {
			command = rest
		}
		if command == "" || strings.Contains(command, "/") {
			h.fail(w, r, v, "", http.StatusBadRequest, "missing CallbackCommand query parameter")
			return
		}
		rec.Outcome.RequestID = md.RequestId
		if h.opts.Auth != nil {
			if ref := h.opts.Auth.CheckTencent(r.RemoteAddr, q, received); ref != nil {
				h.refuse(w, r, v, command, ref)
				return
			}
		}
	}
	rec.Command = command // known only once the caller passed (OpenIM's path may hold its secret)
	if v == vendorOpenIM {
		rec.Outcome.OperationID = md.OperationId
	}
	if r.ContentLength > h.opts.MaxBodyBytes {
		h.fail(w, r, v, command, http.StatusRequestEntityTooLarge, "body larger than the limit")
		return
	}
	// The body is read whole (it is stored as the event's raw body) into a pooled buffer: nothing
	// holds on to it once the answer is written. The declared length sizes it only up to what the
	// pool keeps; a larger body grows it as its bytes arrive.
	buf := bufpool.Get(int(min(max(r.ContentLength, 0), bufpool.MaxKept)) + 1)
	defer bufpool.Put(buf)
	body, err := readBody(*buf, r.Body, h.opts.MaxBodyBytes)
	*buf = body
	if err != nil {
		h.fail(w, r, v, command, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	if int64(len(body)) > h.opts.MaxBodyBytes {
		h.fail(w, r, v, command, http.StatusRequestEntityTooLarge, "body larger than the limit")
		return
	}
	ctx := server.WithCallInfo(r.Context(), &server.CallInfo{Body: body, Received: received, Metadata: md})
	ctx = server.WithOutcome(ctx, rec.Outcome)
	if h.opts.Tracer != nil {
		rec.Outcome.MarkDecodeStart()
	}
	r2 := r.WithContext(ctx)
	u := *r.URL
	u.Path, u.RawPath, u.RawQuery = routePath(v, command), "", ""
	r2.URL = &u
	r2.Body = &bodyReader{b: body}
	// The services get the request's facts from CallInfo; without headers the mux skips parsing
	// Content-Type and copying headers into gRPC metadata for each callback.
	r2.Header = nil
	h.mux.ServeHTTP(w, r2)
}

// refuse answers a caller that auth refused: 401 asks OpenIM's client for Basic credentials.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, v vendor, command string, ref *auth.Refusal) {
	if ref.Status == http.StatusUnauthorized && v == vendorOpenIM {
		w.Header().Set("WWW-Authenticate", `Basic realm="imbridge", charset="UTF-8"`)
	}
	h.fail(w, r, v, command, ref.Status, ref.Msg)
}

// readBody appends r to b until EOF or until it holds more than limit bytes.
func readBody(b []byte, r io.Reader, limit int64) ([]byte, error) {
	for int64(len(b)) <= limit {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		room := min(int64(cap(b)), limit+1)
		n, err := r.Read(b[len(b):room])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// routePath is the mux path of a command: /openim/{command} or /tencent/{command}.
func routePath(v vendor, command string) string {
	if v == vendorOpenIM {
		return "/openim/" + command
	}
	return "/tencent/" + command
}

// cleanPath folds repeated slashes: OpenIM with a url ending in "/" posts to "//command".
func cleanPath(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	if h.opts.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := h.opts.Ready(ctx); err != nil {
			b, _ := marshalJSONString(err.Error())
			// A fault every instance shares (the log's cluster electing a leader): draining this
			// instance would not help, so it stays in rotation and says so.
			var d interface{ Degraded() bool }
			if errors.As(err, &d) && d.Degraded() {
				writeJSON(w, http.StatusOK, append(append([]byte(`{"status":"degraded","error":`), b...), '}'))
				return
			}
			writeJSON(w, http.StatusServiceUnavailable, append(append([]byte(`{"status":"unavailable","error":`), b...), '}'))
			return
		}
	}
	writeJSON(w, http.StatusOK, []byte(`{"status":"ready"}`))
}

// bodyReader hands the already-read body to the mux's decoder without a copy.
type bodyReader struct {
	b   []byte
	off int
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}

func (r *bodyReader) Close() error { return nil }

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// answerWriter keeps the status and error message of a callback's answer, for its record.
type answerWriter struct {
	http.ResponseWriter
	status int
	err    string
}

func (w *answerWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
