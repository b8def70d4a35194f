package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// TestTailResumesOnAnotherInstance: a live tail whose bridge instance stops subscribes again to
// another instance on the same log and resumes where it was: every event printed once, in order,
// those stored while it was away included.
func TestTailResumesOnAnotherInstance(t *testing.T) {
	t.Parallel()
	url := bridgetest.ExternalNATS(t)
	a := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	b := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	var aStopped atomic.Bool
	conn, err := grpc.NewClient("passthrough:///bridge", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			if aStopped.Load() {
				return b.DialContext(ctx, addr)
			}
			return a.DialContext(ctx, addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r, w := io.Pipe()
	var notes strings.Builder
	done := make(chan error, 1)
	go func() {
		done <- followEvents(ctx, pb.NewEventServiceClient(conn), &pb.Subscription{StartSequence: 1}, w, &notes)
		w.Close()
	}()
	post := func(i int) {
		body := fmt.Sprintf(`{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G%d","userID":"u"}`, i)
		if code, out := b.Post(t, http.MethodPost, "/openim/callbackAfterQuitGroupCommand", nil, []byte(body)); code != http.StatusOK {
			t.Fatalf("post %d: %d %s", i, code, out)
		}
	}
	lines := bufio.NewScanner(r)
	next := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("tail ended: %v", lines.Err())
		}
		var ev struct {
			MemberQuit struct{ GroupID string } `json:"memberQuit"`
		}
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("%s: %v", lines.Text(), err)
		}
		return ev.MemberQuit.GroupID
	}
	const n = 60
	for i := range n / 2 {
		post(i)
	}
	for i := range n / 4 {
		if got := next(); got != fmt.Sprintf("G%d", i) {
			t.Fatalf("line %d: %s", i, got)
		}
	}
	aStopped.Store(true)
	a.Close()
	for i := n / 2; i < n; i++ {
		post(i)
	}
	for i := n / 4; i < n; i++ {
		if got := next(); got != fmt.Sprintf("G%d", i) {
			t.Fatalf("line %d: %s; want G%d (once each, in order)", i, got, i)
		}
	}
	cancel()
	r.Close() // a tail blocked writing a line (one more than expected) returns
	if err := <-done; err != nil && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatal(err)
	}
	if !strings.Contains(notes.String(), "subscribing again") {
		t.Errorf("tail said %q; want a note that it subscribed again", notes.String())
	}
}
