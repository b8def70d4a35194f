package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// postBody posts a body to a running bridge and returns the status and answer.
func postBody(t *testing.T, url string, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(out)
}

// sizedBody is an OpenIM message callback body of exactly n bytes.
func sizedBody(n int) []byte {
	head := `{"callbackCommand":"callbackAfterSendGroupMsgCommand","groupID":"G1","content":"`
	return []byte(head + strings.Repeat("x", n-len(head)-2) + `"}`)
}

var maxBodyRE = regexp.MustCompile(`body limit lowered.* max_body_bytes=(\d+)`)

// TestBodyLimitFollowsTheLog: on a NATS server with its default 1 MiB max_payload, a 540 KB body was
// accepted, then answered 503 "maximum payload exceeded" (the event holds the body and its decoded
// fields). Now the bridge lowers its body limit to what the log can store and says so at startup;
// such a body gets 413, and the largest body accepted reaches a subscriber byte for byte.
func TestBodyLimitFollowsTheLog(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir(), "--nats-url", bridgetest.ExternalNATS(t))
	m := maxBodyRE.FindStringSubmatch(p.logText())
	if m == nil {
		t.Fatalf("no startup line saying the body limit was lowered\n%s", p.logText())
	}
	limit, _ := strconv.Atoi(m[1])
	if limit < 400<<10 || limit >= 540_000 {
		t.Fatalf("body limit %d; want the most a 1 MiB message can store, over 400 KiB", limit)
	}
	url := "http://" + p.httpAddr + "/openim/callbackAfterSendGroupMsgCommand"
	stream := subscribeTo(t, p.grpcAddr, &pb.Subscription{Group: "big"})

	status, answer := postBody(t, url, sizedBody(540_000))
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(answer, `"errCode":413`) {
		t.Errorf("540 KB body: %d %s; want 413 in OpenIM's format", status, answer)
	}
	largest := sizedBody(limit)
	if status, answer := postBody(t, url, largest); status != http.StatusOK {
		t.Fatalf("largest body: %d %s; want 200", status, answer)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetEvent().GetRawBody(); !bytes.Equal(got, largest) {
		t.Errorf("subscriber got a body of %d bytes; want the %d bytes posted", len(got), len(largest))
	}
}

// TestOneProcessPerDataDir: a second `imbridge serve` on a data dir in use exits at once, non-zero,
// naming the dir and the first one's pid, before it touches the store; the first keeps serving.
// Before the lock, both answered OK, both wrote the same sequences, and a restart lost events.
func TestOneProcessPerDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := startServe(t, dir)
	ctx, cancel := context.WithTimeout(t.Context(), bridgetest.Timeout)
	defer cancel()
	second := exec.CommandContext(ctx, bridgetest.Binary(t), "serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--data-dir", dir)
	out, err := second.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 || ctx.Err() != nil {
		t.Fatalf("second process: %v; want a non-zero exit\n%s", err, out)
	}
	pid := strconv.Itoa(first.cmd.Process.Pid)
	if !strings.Contains(string(out), dir) || !strings.Contains(string(out), "process "+pid) {
		t.Errorf("second process said %q; want the data dir %s and pid %s", out, dir, pid)
	}
	if strings.Contains(string(out), "rebuild") {
		t.Errorf("second process touched the store: %s", out)
	}
	var answer bytes.Buffer
	if err := send(t.Context(), []string{"--url", "http://" + first.httpAddr, "openim-after-quit-group"}, &answer); err != nil || !strings.Contains(answer.String(), `"actionCode":0`) {
		t.Errorf("first process after the second's attempt: %v %s; want OK", err, answer.String())
	}
}

// TestPolicyTypoWarned: a policy file naming a command no IM server sends starts, with a warning that
// names it (it used to be accepted silently, and the real command took the default policy).
func TestPolicyTypoWarned(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir(), "--config", writePolicies(t, "commands:\n  callbackBeforeSetGroupInfoExComand: {failure_policy: refuse}\n"))
	if log := p.logText(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "command=callbackBeforeSetGroupInfoExComand") {
		t.Errorf("no warning naming the unknown command in\n%s", log)
	}
}

// TestSlowClients: 500 connections that send half a request header and stop (slowloris) do not keep
// a callback from being answered.
func TestSlowClients(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	for range 500 {
		c, err := net.Dial("tcp", p.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("POST /openim/callbackAfterQuitGroupCommand HTTP/1.1\r\nHost: x\r\nContent-")); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	status, answer := postBody(t, "http://"+p.httpAddr+"/openim/callbackAfterQuitGroupCommand", []byte(`{"groupID":"G1","userID":"u"}`))
	if status != http.StatusOK {
		t.Errorf("callback beside 500 slow clients: %d %s", status, answer)
	}
	if d := time.Since(start); d > 5*time.Second { // OpenIM's default callback timeout
		t.Errorf("callback beside 500 slow clients took %v", d)
	}
}

// TestHugeBody: a 100 MB body is refused with 413 from its declared length, and a chunked one once
// the limit is passed, without the bridge reading the rest.
func TestHugeBody(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	for _, tt := range []struct {
		name, header string
		body         func(w io.Writer) error
	}{
		{"declared", "Content-Length: 100000000\r\n", func(w io.Writer) error {
			_, err := w.Write(bytes.Repeat([]byte("x"), 64<<10))
			return err
		}},
		{"chunked", "Transfer-Encoding: chunked\r\n", func(w io.Writer) error {
			chunk := append(append([]byte(fmt.Sprintf("%x\r\n", 64<<10)), bytes.Repeat([]byte("x"), 64<<10)...), "\r\n"...)
			for range 100_000_000 / (64 << 10) {
				if _, err := w.Write(chunk); err != nil {
					return err // the bridge stopped reading: what the test wants
				}
			}
			return nil
		}},
	} {
		c, err := net.Dial("tcp", p.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(bridgetest.Timeout))
		if _, err := fmt.Fprintf(c, "POST /openim/callbackAfterSendGroupMsgCommand HTTP/1.1\r\nHost: x\r\n%s\r\n", tt.header); err != nil {
			t.Fatal(err)
		}
		sent := make(chan error, 1)
		go func() { sent <- tt.body(c) }()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: %s; want 413", tt.name, resp.Status)
		}
		c.Close()
		<-sent
	}
}

// TestMaxStreamsPerConn: the gRPC port announces --max-streams-per-conn in its HTTP/2 settings, so
// that one connection cannot open streams without bound.
func TestMaxStreamsPerConn(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir(), "--max-streams-per-conn", "7")
	conn, err := net.Dial("tcp", p.grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(bridgetest.Timeout))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	settings, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v; want the server's settings", f)
	}
	if v, ok := settings.Value(http2.SettingMaxConcurrentStreams); !ok || v != 7 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (set: %v); want 7", v, ok)
	}
}

func TestByteSizeFlag(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "512MiB": 512 << 20, "20GB": 20e9, "1 KiB": 1024, "7B": 7} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("%q: %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1XB", "GB", "99999999999TiB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("%q: %d; want an error", in, b)
		}
	}
}
