package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imbridge/imbridge/examples"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// process is a running `imbridge serve`.
type process struct {
	cmd         *exec.Cmd
	httpAddr    string
	grpcAddr    string
	metricsAddr string
	exited      chan error
	lines       chan string // every log line, for waitLog

	mu  sync.Mutex
	log bytes.Buffer // guarded by mu
}

// listenRE finds the listening lines in either log format (text: msg="http listening" addr=...;
// json: "msg":"http listening","addr":"...").
var listenRE = regexp.MustCompile(`msg"?[=:]"(http|grpc|metrics) listening"[ ,]"?addr"?[=:]"?([^\s"]+)`)

// startServe runs the real binary on loopback port 0 and reads the bound addresses from its log.
func startServe(t *testing.T, dataDir string, args ...string) *process {
	t.Helper()
	return startBinary(t, bridgetest.Binary(t), dataDir, args...)
}

// startBinary is startServe with another build of the bridge.
func startBinary(t *testing.T, bin, dataDir string, args ...string) *process {
	t.Helper()
	args = append([]string{"serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--data-dir", dataDir}, args...)
	return startProcess(t, exec.Command(bin, args...))
}

// startProcess starts cmd, a command that runs `imbridge serve` with its standard error, and waits
// until the bridge listens.
func startProcess(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, exited: make(chan error, 1), lines: make(chan string, 1000)}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- line:
			default:
			}
			if m := listenRE.FindStringSubmatch(line); m != nil {
				switch m[1] {
				case "http":
					p.httpAddr = m[2]
				case "metrics":
					p.metricsAddr = m[2]
				default:
					p.grpcAddr = m[2]
					close(found) // grpc is logged after http
				}
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	timer := time.NewTimer(bridgetest.Timeout)
	defer timer.Stop()
	select {
	case <-found:
	case err := <-p.exited:
		t.Fatalf("imbridge exited: %v\n%s", err, p.logText())
	case <-timer.C:
		t.Fatalf("imbridge did not start\n%s", p.logText())
	}
	return p
}

func (p *process) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// waitLog waits for a log line containing s.
func (p *process) waitLog(t *testing.T, s string) {
	t.Helper()
	timer := time.NewTimer(bridgetest.Timeout)
	defer timer.Stop()
	for {
		select {
		case line := <-p.lines:
			if strings.Contains(line, s) {
				return
			}
		case <-timer.C:
			t.Fatalf("no log line with %q\n%s", s, p.logText())
		}
	}
}

func (p *process) wait(t *testing.T) error {
	t.Helper()
	timer := time.NewTimer(bridgetest.Timeout)
	defer timer.Stop()
	select {
	case err := <-p.exited:
		return err
	case <-timer.C:
		t.Fatal("imbridge did not exit")
		return nil
	}
}

// TestSurvivesHardKill: an event answered "OK" is in the log even when the process is killed with
// SIGKILL right after answering; the restarted bridge delivers it.
func TestSurvivesHardKill(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	p := startServe(t, dataDir)
	ex := examples.Must("openim-after-quit-group")
	var out bytes.Buffer
	if err := send(t.Context(), []string{"--url", "http://" + p.httpAddr, ex.Name}, &out); err != nil {
		t.Fatalf("send: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}`) {
		t.Fatalf("answer %s; want OK", out.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.wait(t)

	p = startServe(t, dataDir)
	stream := subscribeTo(t, p.grpcAddr, &pb.Subscription{Group: "after-crash"})
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("no event after restart: %v", err)
	}
	if ev := resp.GetEvent(); ev.GetMemberQuit().GetGroupId() != "G001" || !bytes.Equal(ev.RawBody, ex.Body) {
		t.Errorf("event after restart %v; want the quit posted before the kill", ev)
	}
	// SIGTERM: a clean exit.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t); err != nil {
		t.Errorf("exit after SIGTERM: %v; want 0", err)
	}
}

// TestHealthEndpoints of the real binary, and the gRPC health service.
func TestServeHealth(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	// With nothing configured every door is open, and the bridge says so for each.
	for _, door := range []string{"OpenIM callbacks", "Tencent callbacks", "gRPC"} {
		if !strings.Contains(p.logText(), "OPEN: no authentication configured for "+door) {
			t.Errorf("no warning that %s are open:\n%s", door, p.logText())
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
		resp, err := http.Get("http://" + p.httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		if path == "/metrics" && !strings.Contains(string(body), "imbridge_nats_rejected_total") {
			t.Errorf("GET /metrics: no imbridge_nats_rejected_total in\n%.500s", body)
		}
		if path == "/openapi.json" && (!json.Valid(body) || !strings.Contains(string(body), `"swagger": "2.0"`) || !strings.Contains(string(body), `"/openim/{command}"`)) {
			t.Errorf("GET /openapi.json: not the OpenAPI document of the callback routes:\n%.500s", body)
		}
	}
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("grpc health: %v, %v; want SERVING", hc, err)
	}
}

// TestSendAndTail: `send` posts each built-in example and `tail` prints what the bridge stored.
func TestSendAndTail(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- followEvents(ctx, b.Events, &pb.Subscription{Group: "tail"}, w, io.Discard)
		w.Close()
	}()
	lines := bufio.NewScanner(r)
	for _, name := range examples.Names() {
		if strings.Contains(name, "before") {
			continue
		}
		var out bytes.Buffer
		if err := send(ctx, []string{"--url", b.URL, name}, &out); err != nil {
			t.Fatalf("send %s: %v\n%s", name, err, out.String())
		}
		ex := examples.Must(name)
		if !lines.Scan() {
			t.Fatalf("tail ended: %v", lines.Err())
		}
		if line := lines.Text(); !strings.Contains(line, `"command":"`+ex.Command+`"`) {
			t.Errorf("tail printed %s; want the %s event", line, ex.Command)
		}
	}
	cancel()
	r.Close()
	if err := <-done; err != nil && ctx.Err() == nil {
		t.Errorf("tail: %v", err)
	}
}

func TestSendFileNeedsCommand(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "cb.json")
	if err := os.WriteFile(f, []byte(`{"groupID":"g"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCallback(f, "", ""); err == nil {
		t.Error("loadCallback of a body without a command: nil error; want one")
	}
	ex, err := loadCallback(f, "tencent", "Group.CallbackAfterGroupDestroyed")
	if err != nil || ex.Vendor != examples.Tencent || ex.Command != "Group.CallbackAfterGroupDestroyed" {
		t.Errorf("loadCallback = %+v, %v", ex, err)
	}
}

func TestEnvTwins(t *testing.T) {
	t.Setenv("IMBRIDGE_HTTP_ADDR", "127.0.0.1:1")
	t.Setenv("IMBRIDGE_GRPC_ADDR", "127.0.0.1:2")
	fs := newFlagSet("serve", "")
	httpAddr := fs.String("http-addr", ":8080", "")
	grpcAddr := fs.String("grpc-addr", ":9090", "")
	if err := parseFlags(fs, []string{"--grpc-addr", "127.0.0.1:3"}); err != nil {
		t.Fatal(err)
	}
	if *httpAddr != "127.0.0.1:1" || *grpcAddr != "127.0.0.1:3" {
		t.Errorf("http %s grpc %s; want the environment's http and the flag's grpc", *httpAddr, *grpcAddr)
	}
}

// TestShutdownFinishesCallbacksInFlight: after SIGTERM the bridge stops taking callbacks but the one
// in flight still gets its decider's verdict, and the process exits cleanly.
func TestShutdownFinishesCallbacksInFlight(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir(), "--config", writePolicies(t, "default: {deadline: 15s}\n"))
	stream := subscribeTo(t, p.grpcAddr, &pb.Subscription{Group: "mod", Decide: true})
	ctx := t.Context()
	type result struct {
		out string
		err error
	}
	answered := make(chan result, 1)
	go func() {
		var out bytes.Buffer
		err := send(ctx, []string{"--url", "http://" + p.httpAddr, "openim-before-set-group-info-ex"}, &out)
		answered <- result{out.String(), err}
	}()
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "shutting down")
	verdict := &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "decided during shutdown"}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Verdict{Verdict: &pb.VerdictReply{EventId: resp.GetEvent().GetId(), Verdict: verdict}}}); err != nil {
		t.Fatal(err)
	}
	r := <-answered
	if !strings.Contains(r.out, `"errMsg":"decided during shutdown"`) {
		t.Errorf("answer %q (%v); want the verdict given during shutdown", r.out, r.err)
	}
	if err := p.wait(t); err != nil {
		t.Errorf("exit: %v; want 0", err)
	}
}

// TestReflection: grpcurl list works.
func TestReflection(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"imbridge.v1.EventService", "imbridge.v1.OpenIMCallbackService", "imbridge.v1.TencentCallbackService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("services %v; want %s", names, want)
		}
	}
}

// writePolicies writes a policy file for --config and returns its path.
func writePolicies(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// subscribeTo opens a Subscribe stream to a running bridge and waits for the confirmation.
func subscribeTo(t *testing.T, addr string, sub *pb.Subscription) pb.EventService_SubscribeClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), bridgetest.Timeout)
	t.Cleanup(cancel)
	stream, err := pb.NewEventServiceClient(conn).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // subscribed
		t.Fatal(err)
	}
	return stream
}

// TestServeOperations: what an operator sees of a running bridge. JSON logs, one object per line,
// with the version, the event log and the auth in force at startup and an access line per
// callback; /healthz with the version; /metrics on --metrics-addr alone, with the callback, gRPC and
// event log metrics.
func TestServeOperations(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir(), "--log-format", "json", "--metrics-addr", "127.0.0.1:0")
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if status, body := postBody(t, "http://"+p.httpAddr+"/openim/callbackAfterQuitGroupCommand", []byte(`{"groupID":"G1","userID":"u"}`)); status != http.StatusOK {
		t.Fatalf("callback: %d %s", status, body)
	}
	p.waitLog(t, `"msg":"callback"`)

	byMsg := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(p.logText()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		byMsg[rec["msg"].(string)] = rec
	}
	if v, _ := byMsg["imbridge starting"]["version"].(string); v == "" {
		t.Errorf("startup line without a version: %v", byMsg["imbridge starting"])
	}
	if open := byMsg["event log open"]; open["nats"] != "embedded" || open["data_dir"] == nil || open["stream"] == nil {
		t.Errorf("event log line %v; want the embedded log's data dir and stream", open)
	}
	if a := byMsg["auth"]; a["openim"] != "open" || a["subscriber_tokens"] != 0.0 {
		t.Errorf("auth line %v; want every door reported open", a)
	}
	if cb := byMsg["callback"]; cb["command"] != "callbackAfterQuitGroupCommand" || cb["answer"] != "ok" || cb["status"] != 200.0 {
		t.Errorf("access line %v", cb)
	}

	if _, body := get("http://" + p.httpAddr + "/healthz"); !strings.Contains(body, `"version":`) {
		t.Errorf("/healthz %s; want the version", body)
	}
	if status, _ := get("http://" + p.httpAddr + "/metrics"); status != http.StatusNotFound {
		t.Errorf("/metrics on the HTTP port: %d; want 404 with --metrics-addr", status)
	}
	status, body := get("http://" + p.metricsAddr + "/metrics")
	for _, want := range []string{
		`imbridge_callbacks_total{answer="ok",command="callbackAfterQuitGroupCommand",phase="after",vendor="openim"} 1`,
		"grpc_server_handled_total", "imbridge_log_records 1", "imbridge_log_up 1", "go_goroutines",
	} {
		if status != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("--metrics-addr /metrics: %d, no %s", status, want)
		}
	}

	out, err := exec.Command(bridgetest.Binary(t), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "imbridge ") {
		t.Errorf("imbridge --version: %q, %v", out, err)
	}
}

// TestGroupsCommand: imbridge groups list, show, reset and delete against a running bridge, and
// imbridge healthcheck.
func TestGroupsCommand(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	stream := subscribeTo(t, p.grpcAddr, &pb.Subscription{Group: "audit"})
	// A group whose member has left.
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, leave := context.WithCancel(t.Context())
	idle, err := pb.NewEventServiceClient(conn).Subscribe(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: &pb.Subscription{Group: "idle"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := idle.Recv(); err != nil {
		t.Fatal(err)
	}
	leave()
	if status, body := postBody(t, "http://"+p.httpAddr+"/openim/callbackAfterQuitGroupCommand", []byte(`{"groupID":"G1","userID":"u"}`)); status != http.StatusOK {
		t.Fatalf("callback: %d %s", status, body)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bridgetest.Binary(t), append(args, "--server", p.grpcAddr)...).CombinedOutput()
		return string(out), err
	}
	out, err := run("groups", "list")
	if err != nil || !regexp.MustCompile(`(?m)^GROUP\s+DECIDE\s+MEMBERS HERE.*\n^audit\s+false\s+1\s+0\s+1\s`).MatchString(out) {
		t.Errorf("groups list: %v\n%s", err, out)
	}
	group := func(out string) *pb.Group {
		g := new(pb.Group)
		if err := protojson.Unmarshal([]byte(out), g); err != nil {
			t.Errorf("not a Group in JSON: %v\n%s", err, out)
		}
		return g
	}
	// tail --ordered makes an ordered group, which the list shows.
	tctx, stopTail := context.WithCancel(t.Context())
	defer stopTail()
	tailCmd := exec.CommandContext(tctx, bridgetest.Binary(t), "tail", "--group", "ordered", "--ordered", "--server", p.grpcAddr)
	if err := tailCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer tailCmd.Wait() //nolint:errcheck // killed
	bridgetest.WaitFor(t, "tail --ordered joined", func() bool {
		out, err := run("groups", "show", "ordered")
		return err == nil && group(out).GetMembersHere() == 1
	})
	if out, err := run("groups", "show", "ordered"); err != nil || group(out).GetOrder() != pb.Order_ORDER_IM_GROUP {
		t.Errorf("groups show of tail --ordered's group: %v\n%s; want order ORDER_IM_GROUP", err, out)
	}
	if out, err := run("groups", "list"); err != nil || !regexp.MustCompile(`(?m)^ordered\s+false\s+1\s+.*\sim-group\s`).MatchString(out) {
		t.Errorf("groups list: %v\n%s; want the ordered group with im-group", err, out)
	}
	stopTail()
	if out, err := run("groups", "show", "audit"); err != nil || group(out).GetName() != "audit" || group(out).GetUnackedRecords() != 1 {
		t.Errorf("groups show: %v\n%s", err, out)
	}
	if out, err := run("groups", "reset", "audit", "--to-time", "1h"); err == nil || !strings.Contains(out, "stop them") {
		t.Errorf("groups reset under a member: %v\n%s; want a refusal", err, out)
	}
	bridgetest.WaitFor(t, "group idle without members", func() bool {
		out, err := run("groups", "show", "idle")
		return err == nil && group(out).GetMembersHere() == 0
	})
	if out, err := run("groups", "reset", "idle", "--to-time", "1h"); err != nil || group(out).GetName() != "idle" {
		t.Errorf("groups reset --to-time: %v\n%s", err, out)
	}
	if out, err := run("groups", "delete", "audit"); err == nil || !strings.Contains(out, "force") {
		t.Errorf("groups delete under a member: %v\n%s; want a refusal naming --force", err, out)
	}
	if out, err := run("groups", "delete", "audit", "--force"); err != nil || out != "deleted audit\n" {
		t.Errorf("groups delete --force: %v\n%s", err, out)
	}
	if out, err := run("groups", "show", "audit"); err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("groups show after delete: %v\n%s", err, out)
	}
	hc, err := exec.Command(bridgetest.Binary(t), "healthcheck", "--url", "http://"+p.httpAddr+"/readyz").CombinedOutput()
	if err != nil || !strings.Contains(string(hc), `"ready"`) {
		t.Errorf("healthcheck: %v %s", err, hc)
	}
}

// TestServeExportsTraces: with OTEL_EXPORTER_OTLP_ENDPOINT set, the bridge sends its spans over
// OTLP (HTTP) to that collector, as service imbridge. (Not parallel: it sets the environment the
// bridge inherits.)
func TestServeExportsTraces(t *testing.T) {
	spans := make(chan *tracepb.ResourceSpans, 100)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err == nil {
				body, _ = io.ReadAll(zr)
			}
		}
		var req coltracepb.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
			return
		}
		for _, rs := range req.GetResourceSpans() {
			spans <- rs
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	p := startServe(t, t.TempDir())
	p.waitLog(t, "tracing on")
	if status, body := postBody(t, "http://"+p.httpAddr+"/openim/callbackAfterQuitGroupCommand", []byte(`{"groupID":"G1","userID":"u"}`)); status != http.StatusOK {
		t.Fatalf("callback: %d %s", status, body)
	}
	timer := time.NewTimer(bridgetest.Timeout)
	defer timer.Stop()
	for {
		select {
		case rs := <-spans:
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					if s.GetName() == "imbridge.callback" {
						if service != "imbridge" {
							t.Errorf("service.name %q; want imbridge", service)
						}
						return
					}
				}
			}
		case <-timer.C:
			t.Fatal("no imbridge.callback span reached the collector")
		}
	}
}
