// Package bridgetest runs a whole bridge in process for tests: the embedded event log in a temporary
// directory, the gateway on an httptest server and the gRPC services on a bufconn listener.
package bridgetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/imbridge/imbridge/auth"
	"github.com/imbridge/imbridge/eventlog"
	"github.com/imbridge/imbridge/gateway"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/gen/openapiv2"
	"github.com/imbridge/imbridge/server"
)

// Timeout bounds every wait in a test: a guard against hangs, never a synchronization.
const Timeout = 20 * time.Second

// Options configures Start.
type Options struct {
	// DataDir of the event log; default a new t.TempDir().
	DataDir string
	// NATSURL: an external NATS server instead of the embedded one.
	NATSURL string
	// Role: server.Options.Role.
	Role server.Role
	// Policies for verdicts.
	Policies *server.Policies
	// Gateway options (services, Ready, Auth and Logger are filled in).
	Gateway gateway.Options
	// Auth: who may call (callers and subscribers), as in the --config file. Zero: anyone.
	Auth auth.Config
	// MaxSubscribers: server.Options.MaxSubscribers.
	MaxSubscribers int
	// MaxUnackedBytes: server.Options.MaxUnackedBytes.
	MaxUnackedBytes int
	// PublishTimeout: server.Options.PublishTimeout.
	PublishTimeout time.Duration
	// FailoverWait: server.Options.FailoverWait.
	FailoverWait time.Duration
	// Tracer traces callbacks and deliveries; nil: off.
	Tracer trace.Tracer
	// Logger of the bridge; default: discarded.
	Logger *slog.Logger
}

// Bridge is a running in-process bridge.
type Bridge struct {
	URL     string       // base URL of the HTTP gateway
	Handler http.Handler // the gateway itself, for calls without a connection
	Events  pb.EventServiceClient
	OpenIM  pb.OpenIMCallbackServiceClient
	Conn    *grpc.ClientConn
	Server  *server.Server
	Log     *eventlog.Log
	Metrics *prometheus.Registry // the server's metrics
	// Close stops the bridge (it also stops when the test ends).
	Close func()
	// Kill stops the bridge as kill -9 would, as far as the event log can tell: its NATS
	// connection is closed first, so nothing it holds is handed back.
	Kill func()

	lis *bufconn.Listener
}

// DialContext connects to the bridge's gRPC server (for grpc.WithContextDialer).
func (b *Bridge) DialContext(ctx context.Context, _ string) (net.Conn, error) {
	return b.lis.DialContext(ctx)
}

// Start runs a bridge until the test ends.
func Start(t testing.TB, opts Options) *Bridge {
	t.Helper()
	ctx := context.Background()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log, err := eventlog.Open(ctx, eventlog.Options{DataDir: opts.DataDir, URL: opts.NATSURL, Logger: logger})
	if err != nil {
		t.Fatalf("open event log: %v", err)
	}
	reg := prometheus.NewRegistry()
	srv, err := server.New(server.Options{
		Role: opts.Role, Log: log, Policies: opts.Policies, Logger: logger, Registerer: reg,
		MaxSubscribers: opts.MaxSubscribers, MaxUnackedBytes: opts.MaxUnackedBytes, Tracer: opts.Tracer,
		PublishTimeout: opts.PublishTimeout, FailoverWait: opts.FailoverWait,
	})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	rules, err := auth.New(opts.Auth)
	if err != nil {
		t.Fatalf("auth: %v", err)
	}
	gopts := opts.Gateway
	gopts.OpenIM, gopts.Tencent, gopts.Ready, gopts.Auth, gopts.Logger = srv.OpenIM(), srv.Tencent(), srv.Ready, rules, logger
	gopts.Record, gopts.Tracer = srv.Record, opts.Tracer
	if gopts.OpenAPI == nil {
		gopts.OpenAPI = openapiv2.JSON
	}
	if gopts.Metrics == nil {
		gopts.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	}
	gw, err := gateway.New(ctx, gopts)
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	hs := httptest.NewServer(gw)

	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(append(server.GRPCServerOptions(),
		grpc.ChainUnaryInterceptor(srv.CallbackInterceptor(), rules.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(rules.StreamInterceptor()),
	)...)
	srv.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc client: %v", err)
	}
	b := &Bridge{
		URL:     hs.URL,
		Handler: gw,
		Events:  pb.NewEventServiceClient(conn),
		OpenIM:  pb.NewOpenIMCallbackServiceClient(conn),
		Conn:    conn,
		Server:  srv,
		Log:     log,
		Metrics: reg,
		lis:     lis,
	}
	killed := false
	stop := sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		hs.Close()
		_ = srv.Close(ctx)
		conn.Close()
		gs.Stop()
		srv.Stop()
		if err := log.Close(ctx); err != nil && !killed {
			t.Errorf("close event log: %v", err)
		}
	})
	b.Close = stop
	b.Kill = func() {
		killed = true
		b.CutNATS()
		stop()
	}
	t.Cleanup(b.Close)
	return b
}

// CutNATS closes the bridge's NATS connections: from then on, the event log is gone for it.
func (b *Bridge) CutNATS() {
	b.Log.Conn().Close()
	b.Log.AnswerConn().Close()
}

// Dial opens another gRPC connection to the bridge, with opts added to the insecure credentials; it
// is closed when the test ends.
func (b *Bridge) Dial(t testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufconn", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return b.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)...)
	if err != nil {
		t.Fatalf("grpc client: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Post sends a request to the gateway and returns the status and body.
func (b *Bridge) Post(t testing.TB, method, pathAndQuery string, header http.Header, body []byte) (int, []byte) {
	t.Helper()
	status, out, err := b.Do(method, pathAndQuery, header, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, pathAndQuery, err)
	}
	return status, out
}

// Do is Post for use outside the test's goroutine: it returns the error.
func (b *Bridge) Do(method, pathAndQuery string, header http.Header, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, b.URL+pathAndQuery, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// Sub is an open subscription.
type Sub struct {
	t      testing.TB
	Stream pb.EventService_SubscribeClient
	Cancel context.CancelFunc
}

// Subscribe opens a subscription and waits for the bridge's confirmation. Cancel ends it.
func (b *Bridge) Subscribe(t testing.TB, sub *pb.Subscription) *Sub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := b.Events.Subscribe(ctx)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}}); err != nil {
		t.Fatalf("send subscription: %v", err)
	}
	s := &Sub{t: t, Stream: stream, Cancel: cancel}
	resp := s.recv()
	if resp.GetSubscribed() == nil {
		t.Fatalf("first response %v; want subscribed", resp)
	}
	return s
}

func (s *Sub) recv() *pb.SubscribeResponse {
	s.t.Helper()
	resp, err := s.wait()
	if err != nil {
		s.t.Fatalf("recv: %v", err)
	}
	return resp
}

// End waits for the bridge to end the subscription and returns the error it ended with. A message
// instead fails the test.
func (s *Sub) End() error {
	s.t.Helper()
	resp, err := s.wait()
	if err == nil {
		s.t.Fatalf("got %v; want the subscription to end", resp)
	}
	return err
}

// wait receives the next message or the error that ended the stream.
func (s *Sub) wait() (*pb.SubscribeResponse, error) {
	s.t.Helper()
	type result struct {
		resp *pb.SubscribeResponse
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := s.Stream.Recv()
		ch <- result{r, err}
	}()
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-timer.C:
		s.t.Fatalf("no message from the bridge in %v", Timeout)
		return nil, nil
	}
}

// Next waits for the next event.
func (s *Sub) Next() *pb.Event {
	s.t.Helper()
	ev := s.recv().GetEvent()
	if ev == nil {
		s.t.Fatal("got a non-event message")
	}
	return ev
}

// Ack acks events, in one message.
func (s *Sub) Ack(id string, more ...string) {
	s.t.Helper()
	if err := s.Stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{EventId: id, MoreEventIds: more}}}); err != nil {
		s.t.Fatalf("ack: %v", err)
	}
}

// Nack nacks events, in one message: they are delivered again after delay.
func (s *Sub) Nack(reason string, delay time.Duration, id string, more ...string) {
	s.t.Helper()
	n := &pb.Nack{EventId: id, MoreEventIds: more, Reason: reason}
	if delay > 0 {
		n.Delay = durationpb.New(delay)
	}
	if err := s.Stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: n}}); err != nil {
		s.t.Fatalf("nack: %v", err)
	}
}

// Decide answers an event with a verdict.
func (s *Sub) Decide(id string, v *pb.Verdict) {
	s.t.Helper()
	if err := s.Stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Verdict{
		Verdict: &pb.VerdictReply{EventId: id, Verdict: v},
	}}); err != nil {
		s.t.Fatalf("verdict: %v", err)
	}
}

// ExternalNATS starts a separate NATS server with JetStream on a loopback port chosen by the OS, for
// tests of --nats-url, and returns its client URL. It stops when the test ends.
func ExternalNATS(t testing.TB) string {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(Timeout) {
		t.Fatal("nats not ready")
	}
	return ns.ClientURL()
}

// WaitFor polls cond until it holds, for state the bridge changes in the background with nothing to
// wait on (a member counted out after its client has gone). It fails the test after Timeout.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, Timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds the imbridge command once per test binary and returns its path, for tests of the
// real process (signals, restarts on the same data).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imbridge-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "imbridge")
		if out, err := exec.Command("go", "build", "-o", binPath, "github.com/imbridge/imbridge/cmd/imbridge").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binPath
}
