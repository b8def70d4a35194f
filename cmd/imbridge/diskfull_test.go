package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// diskFullScript runs in a user and mount namespace of its own: it mounts a 24 MiB tmpfs as the
// data directory and starts the bridge on it. It fills the disk up to about 7 MiB free before the
// bridge starts ($4 = before: the embedded JetStream takes what is free then as its limit, and
// refuses writes past it) or when the test says so on the fifo $3, answering on the fifo $5 (after:
// writes meet a full disk). When the test writes to $3 again, it frees the space.
const diskFullScript = `set -e
mount -t tmpfs -o size=24m imbridge-test "$1"
if [ "$4" = before ]; then fallocate -l 17M "$1/ballast"; fi
"$2" serve --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --data-dir "$1/data" --access-log=false &
pid=$!
if [ "$4" = after ]; then
	read -r _ < "$3"
	fallocate -l 17M "$1/ballast"
	echo filled > "$5"
fi
read -r _ < "$3"
rm "$1/ballast"
wait $pid
`

// TestDiskFull (make check-disk-full): the bridge's disk fills up. No callback is answered OK that was
// not stored; the others get a 503 in their vendor's format; /readyz says the log is full; once space
// returns, the bridge takes callbacks again by itself and every callback answered OK reaches the
// group. Needs user and mount namespaces (unshare), to mount a small tmpfs without privileges.
func TestDiskFull(t *testing.T) {
	if os.Getenv("IMBRIDGE_DISKFULL_CHECK") == "" {
		t.Skip("make check-disk-full runs this")
	}
	if out, err := exec.Command("unshare", "--user", "--map-root-user", "--mount", "true").CombinedOutput(); err != nil {
		t.Skipf("no user and mount namespaces here (unshare: %v %s): cannot mount a small disk", err, out)
	}
	// The limit JetStream set itself at startup, and the disk itself.
	for _, when := range []string{"before", "after"} {
		t.Run("filled "+when+" start", func(t *testing.T) { testDiskFull(t, when) })
	}
}

func testDiskFull(t *testing.T, when string) {
	dir, fifos := t.TempDir(), t.TempDir()
	ctl, ack := filepath.Join(fifos, "ctl"), filepath.Join(fifos, "ack")
	for _, f := range []string{ctl, ack} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	say := func(what string) {
		f, err := os.OpenFile(ctl, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, what)
		f.Close()
	}
	cmd := exec.Command("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", diskFullScript, "sh", dir, bridgetest.Binary(t), ctl, when, ack)
	// The shell and the bridge it starts in a process group of their own, killed together at the end
	// (killing the shell alone would leave the bridge running).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := startProcess(t, cmd)
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	if when == "after" {
		say("fill")
		if _, err := os.ReadFile(ack); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bridge log:\n%s", p.logText())
		}
	})
	url := "http://" + p.httpAddr
	audit := subscribeTo(t, p.grpcAddr, &pb.Subscription{Group: "audit", MaxInFlight: 1000})

	// 100 KB callbacks until the disk is full and the bridge refuses at once.
	big := strings.Repeat("x", 100_000)
	var stored []string
	refused := 0
	post := func(op, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, url+"/openim/callbackAfterQuitGroupCommand", strings.NewReader(body))
		req.Header.Set("operationID", op)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i := 0; refused < 3; i++ {
		if i == 400 {
			t.Fatalf("400 callbacks of 100 KB on a 7 MiB disk: %d refused; want the disk full\n%s", refused, p.logText())
		}
		op := fmt.Sprintf("op-%d", i)
		status, body := post(op, `{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G","userID":"`+big+`"}`)
		switch {
		case status == http.StatusOK:
			stored = append(stored, op)
		case status == http.StatusServiceUnavailable && strings.HasPrefix(body, `{"actionCode":1,"errCode":503,"errMsg":"event log `):
			refused++
		default:
			t.Fatalf("callback %d: %d %s; want 200 or OpenIM's 503", i, status, body)
		}
	}
	status, body := postBody(t, url+"/tencent?SdkAppid=1&CallbackCommand=Group.CallbackAfterMemberExit",
		[]byte(`{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"G","Type":"Public","ExitType":"Quit","Operator_Account":"u","ExitMemberList":[{"Member_Account":"`+big+`"}],"EventTime":1}`))
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"ActionStatus":"FAIL"`) || !strings.Contains(body, "event log full") {
		t.Errorf("Tencent callback on a full disk: %d %s; want Tencent's 503 naming the full log", status, body)
	}
	if status, body := getBody(t, url+"/readyz"); status != http.StatusServiceUnavailable || !strings.Contains(body, "event log full") {
		t.Errorf("/readyz on a full disk: %d %s; want 503 naming the full log", status, body)
	}

	// Space returns: the bridge takes callbacks again by itself.
	say("free")
	bridgetest.WaitFor(t, "/readyz ready once space returned", func() bool {
		status, _ := getBody(t, url+"/readyz")
		return status == http.StatusOK
	})
	for i := range 3 {
		op := fmt.Sprintf("after-%d", i)
		if status, body := post(op, `{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G","userID":"u"}`); status != http.StatusOK {
			t.Fatalf("callback after space returned: %d %s", status, body)
		}
		stored = append(stored, op)
	}
	p.waitLog(t, "event log takes writes again")

	// Every callback answered OK reaches the group (it resubscribes if the restart cut it off).
	want := map[string]bool{}
	for _, op := range stored {
		want[op] = true
	}
	deadline := time.Now().Add(bridgetest.Timeout)
	for len(want) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d callbacks answered OK not delivered, e.g. %v", len(want), want)
		}
		resp, err := audit.Recv()
		if err != nil {
			audit = subscribeTo(t, p.grpcAddr, &pb.Subscription{Group: "audit", MaxInFlight: 1000})
			continue
		}
		ev := resp.GetEvent()
		delete(want, ev.GetMetadata().GetOperationId())
		if err := audit.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{EventId: ev.GetId()}}}); err != nil {
			audit = subscribeTo(t, p.grpcAddr, &pb.Subscription{Group: "audit", MaxInFlight: 1000})
		}
	}
	t.Logf("%d callbacks stored and delivered, %d refused while the disk was full", len(stored), refused)
}

// getBody gets url from a running bridge and returns the status and body.
func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
