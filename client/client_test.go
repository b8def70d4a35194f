package client_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/imbridge/imbridge/app"
	"github.com/imbridge/imbridge/client"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
	"github.com/imbridge/imbridge/internal/inprocess"
)

// timeout bounds every wait: a guard against hangs, never a synchronization.
const timeout = 20 * time.Second

func start(t *testing.T, policies string) *inprocess.Bridge {
	t.Helper()
	b, err := inprocess.Start(policies)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b
}

func dial(t *testing.T, target string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(target, append([]client.Option{client.WithBackoff(10*time.Millisecond, 100*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run runs a subscription until the test ends and returns its result channel.
func run(t *testing.T, c *client.Client, sub client.Subscription, h client.Handler) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Subscribe(ctx, sub, h) }()
	t.Cleanup(func() { cancel(); <-done })
	return done
}

// subscribed is an OnSubscribed that signals ch.
func subscribed(ch chan struct{}) func() {
	return func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("%s: nothing after %v", what, timeout)
		var zero T
		return zero
	}
}

func postQuit(t *testing.T, b *inprocess.Bridge, group string) {
	t.Helper()
	code, answer, err := b.PostOpenIM("callbackAfterQuitGroupCommand", `{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"`+group+`","userID":"u"}`)
	if err != nil || code != 200 {
		t.Fatalf("post: %d %v %v", code, answer, err)
	}
}

// TestHandlerErrorNacks: a handler's error nacks the event with the error as its reason; the group
// gets it again, and the second try's nil acks it: it does not come a third time. One event in
// flight at a time keeps the order of the calls.
func TestHandlerErrorNacks(t *testing.T) {
	t.Parallel()
	b := start(t, "")
	var errs []error
	var errMu sync.Mutex
	c := dial(t, b.GRPC, client.WithErrorHandler(func(err error) { errMu.Lock(); errs = append(errs, err); errMu.Unlock() }))
	calls := make(chan string, 10)
	var n atomic.Int32
	run(t, c, client.Subscription{Group: "g", MaxInFlight: 1}, client.HandlerFunc(func(ctx context.Context, ev *pb.Event) error {
		calls <- ev.GetMemberQuit().GetGroupId()
		if n.Add(1) == 1 {
			return errors.New("database down")
		}
		return nil
	}))
	postQuit(t, b, "G1")
	if first, again := wait(t, calls, "first try"), wait(t, calls, "second try"); first != "G1" || again != "G1" {
		t.Fatalf("handled %s then %s; want G1 twice (nacked, then acked)", first, again)
	}
	postQuit(t, b, "G2") // after it: G1 coming a third time would come first
	if g := wait(t, calls, "G2"); g != "G2" {
		t.Fatalf("handled %s; want G2 (G1 came a third time?)", g)
	}
	errMu.Lock()
	defer errMu.Unlock()
	if len(errs) != 1 || !regexp.MustCompile(`nacked: database down`).MatchString(errs[0].Error()) {
		t.Errorf("errors reported %v; want the nack", errs)
	}
}

// TestDeciderDeadline: a decider still running at decide_by is told through its ctx, and the IM
// server gets the failure policy.
func TestDeciderDeadline(t *testing.T) {
	t.Parallel()
	b := start(t, "commands:\n  callbackBeforeSetGroupInfoExCommand: {deadline: 300ms, failure_policy: refuse}\n")
	c := dial(t, b.GRPC)
	ready := make(chan struct{}, 1)
	ended := make(chan error, 1)
	run(t, c, client.Subscription{Group: "slow", Filter: client.Commands("callbackBeforeSetGroupInfoExCommand"), OnSubscribed: subscribed(ready)},
		client.DeciderFunc(func(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
			<-ctx.Done()
			ended <- ctx.Err()
			return nil, ctx.Err() // a decider out of time: never an allow
		}))
	wait(t, ready, "subscribed")
	code, answer, err := b.PostOpenIM("callbackBeforeSetGroupInfoExCommand", `{"callbackCommand":"callbackBeforeSetGroupInfoExCommand","groupID":"G1","groupName":"x"}`)
	if err != nil || code != 200 || answer["nextCode"] != 1.0 {
		t.Errorf("answer %d %v %v; want the refuse failure policy (nextCode 1)", code, answer, err)
	}
	if err := wait(t, ended, "the handler's ctx"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("handler's ctx ended with %v; want DeadlineExceeded", err)
	}
}

// TestMaxInFlight: no more handlers run at once than MaxInFlight, on a live tail, which the bridge
// sends everything at once (a group member's max_in_flight the bridge keeps itself).
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	b := start(t, "")
	c := dial(t, b.GRPC)
	const max, posted = 2, 6
	var running, peak atomic.Int32
	started := make(chan struct{}, posted)
	release := make(chan struct{})
	ready := make(chan struct{}, 1)
	run(t, c, client.Subscription{MaxInFlight: max, OnSubscribed: subscribed(ready)}, client.HandlerFunc(func(ctx context.Context, ev *pb.Event) error {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		started <- struct{}{}
		<-release
		running.Add(-1)
		return nil
	}))
	wait(t, ready, "subscribed")
	for range posted {
		postQuit(t, b, "G")
	}
	for range max {
		wait(t, started, "a handler")
	}
	select {
	case <-started:
		t.Fatalf("a handler started with %d running; want at most %d", running.Load(), max)
	case <-time.After(200 * time.Millisecond): // a bound for a third to show up: can only miss, never fail wrongly
	}
	close(release)
	for range posted - max {
		wait(t, started, "the rest")
	}
	if p := peak.Load(); p > max {
		t.Errorf("%d handlers at once; want at most %d", p, max)
	}
}

// TestCloseEndsSubscribe: closing the client ends its subscriptions with ErrClosed.
func TestCloseEndsSubscribe(t *testing.T) {
	t.Parallel()
	b := start(t, "")
	c, err := client.Dial(b.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.Subscribe(context.Background(), client.Subscription{Group: "g", OnSubscribed: subscribed(ready)}, client.HandlerFunc(func(context.Context, *pb.Event) error { return nil }))
	}()
	wait(t, ready, "subscribed")
	c.Close()
	if err := wait(t, done, "Subscribe to return"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Subscribe after Close: %v; want ErrClosed", err)
	}
}

// TestRefusedForGood: a subscription the bridge refuses as it is ends Subscribe with that error.
func TestRefusedForGood(t *testing.T) {
	t.Parallel()
	b := start(t, "")
	c := dial(t, b.GRPC)
	err := c.Subscribe(context.Background(), client.Subscription{Group: "not a group name"}, client.HandlerFunc(func(context.Context, *pb.Event) error { return nil }))
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Subscribe: %v; want InvalidArgument", err)
	}
	if err := c.Subscribe(context.Background(), client.Subscription{}, client.DeciderFunc(func(context.Context, *pb.Event) (*pb.Verdict, error) { return nil, nil })); err == nil {
		t.Error("a decider without a group: no error")
	}
}

// TestReconnectAcrossRestart: the real binary is killed (SIGKILL) and started again on the same
// data; the client, connected through a proxy that then points at the new process, reconnects,
// gets again the event its handler held unacked, and what is stored after.
func TestReconnectAcrossRestart(t *testing.T) {
	t.Parallel()
	bin := bridgetest.Binary(t)
	data := t.TempDir()
	p := newProxy(t)
	first := serve(t, bin, data)
	p.to(first.grpc)
	c := dial(t, p.addr)
	got := make(chan string, 100)
	ready := make(chan struct{}, 1)
	holding := make(chan struct{})
	var held atomic.Bool
	run(t, c, client.Subscription{Group: "g", OnSubscribed: subscribed(ready)}, client.HandlerFunc(func(ctx context.Context, ev *pb.Event) error {
		g := ev.GetMemberQuit().GetGroupId()
		got <- g
		if g == "unacked" && held.CompareAndSwap(false, true) {
			close(holding)
			<-ctx.Done() // the stream breaks with the kill: never acked
			return ctx.Err()
		}
		return nil
	}))
	wait(t, ready, "subscribed")
	postQuit(t, &inprocess.Bridge{HTTP: first.http}, "before")
	if g := wait(t, got, "the first event"); g != "before" {
		t.Fatalf("got %s; want before", g)
	}
	postQuit(t, &inprocess.Bridge{HTTP: first.http}, "unacked")
	wait(t, holding, "the handler holding the second event")
	<-got
	first.kill(t)
	p.cut()

	second := serve(t, bin, data)
	p.to(second.grpc)
	postQuit(t, &inprocess.Bridge{HTTP: second.http}, "after")
	seen := map[string]bool{}
	for !seen["unacked"] || !seen["after"] {
		seen[wait(t, got, "the events stored around the restart")] = true
	}
	wait(t, ready, "subscribed again")
}

// process is a running `imbridge serve`.
type process struct {
	cmd        *exec.Cmd
	grpc, http string
}

func (p *process) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

var listenRE = regexp.MustCompile(`msg="(http|grpc) listening" addr=(\S+)`)

// serve starts the real binary on loopback ports the OS picks, on data.
func serve(t *testing.T, bin, data string) *process {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--data-dir", data)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p := &process{cmd: cmd}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				if m[1] == "http" {
					p.http = m[2]
				} else {
					p.grpc = m[2]
					close(found)
				}
			}
		}
	}()
	wait(t, found, "imbridge listening")
	return p
}

// proxy forwards TCP connections to a backend that can change, as a load balancer in front of
// bridge instances would.
type proxy struct {
	addr    string
	mu      sync.Mutex
	backend string
	conns   []net.Conn
}

func newProxy(t *testing.T) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	p := &proxy{addr: lis.Addr().String()}
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			backend := p.backend
			p.mu.Unlock()
			out, err := net.Dial("tcp", backend)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) to(backend string) {
	p.mu.Lock()
	p.backend = backend
	p.mu.Unlock()
}

// cut closes every forwarded connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestTokenAndTLS: over TLS, a subscriber with its token gets its group's events; without one, or
// for a group its token does not allow, Subscribe ends at once with the bridge's refusal.
func TestTokenAndTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	const token = "s3cret-token"
	sum := sha256.Sum256([]byte(token))
	config := "subscribers:\n  - name: svc\n    token_sha256: " + hex.EncodeToString(sum[:]) + "\n    scopes: {groups: [g]}\n"
	b, err := inprocess.Start(config, func(c *app.Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	tlsConfig := &tls.Config{RootCAs: pool}

	c := dial(t, b.GRPC, client.WithTLS(tlsConfig), client.WithToken(token))
	got := make(chan string, 1)
	run(t, c, client.Subscription{Group: "g"}, client.HandlerFunc(func(ctx context.Context, ev *pb.Event) error {
		got <- ev.GetMemberQuit().GetGroupId()
		return nil
	}))
	code, answer, err := postTLS(b, pool, "callbackAfterQuitGroupCommand", `{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G1","userID":"u"}`)
	if err != nil || code != 200 {
		t.Fatalf("post: %d %v %v", code, answer, err)
	}
	if g := wait(t, got, "the event over TLS"); g != "G1" {
		t.Errorf("got %s; want G1", g)
	}

	noop := client.HandlerFunc(func(context.Context, *pb.Event) error { return nil })
	if err := dial(t, b.GRPC, client.WithTLS(tlsConfig)).Subscribe(t.Context(), client.Subscription{Group: "g"}, noop); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a token: %v; want Unauthenticated", err)
	}
	if err := c.Subscribe(t.Context(), client.Subscription{Group: "other"}, noop); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a group the token does not allow: %v; want PermissionDenied", err)
	}
}

// postTLS posts an OpenIM callback over HTTPS.
func postTLS(b *inprocess.Bridge, pool *x509.CertPool, command, body string) (int, string, error) {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: timeout}
	resp, err := hc.Post("https://"+b.HTTP+"/openim/"+command, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw), err
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imbridge test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestAllowWith: a decider's replacement is what OpenIM applies: its answer carries the replaced
// name, which OpenIM copies over the requested one.
func TestAllowWith(t *testing.T) {
	t.Parallel()
	b := start(t, "")
	c := dial(t, b.GRPC)
	ready := make(chan struct{}, 1)
	run(t, c, client.Subscription{Group: "clean", Filter: client.Commands("callbackBeforeSetGroupInfoExCommand"), OnSubscribed: subscribed(ready)},
		client.DeciderFunc(func(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
			name, _ := client.ChangedGroupName(ev)
			return client.AllowWith(&pb.GroupInfoChanged{Name: proto.String(strings.ToLower(name))}), nil
		}))
	wait(t, ready, "subscribed")
	code, answer, err := b.PostOpenIM("callbackBeforeSetGroupInfoExCommand", `{"callbackCommand":"callbackBeforeSetGroupInfoExCommand","groupID":"G1","groupName":"LOUD NAME"}`)
	if err != nil || code != 200 || answer["nextCode"] != 0.0 || answer["groupName"] != "loud name" {
		t.Errorf("answer %d %v %v; want allowed with groupName \"loud name\"", code, answer, err)
	}
}
