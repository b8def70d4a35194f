package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imbridge/imbridge/client"
	"github.com/imbridge/imbridge/internal/inprocess"
)

// syncBuffer is a log destination safe for the service's goroutines; wrote is signalled on each
// write.
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestModeration: against a real bridge, a name with a listed word is refused in OpenIM's answer
// (what OpenIM applies: nextCode 1 stops the change), another is allowed, and a quit is logged.
func TestModeration(t *testing.T) {
	b, err := inprocess.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	c, err := client.Dial(b.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	logs := &syncBuffer{wrote: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- run(ctx, c, []string{"Spam"}, slog.New(slog.NewTextHandler(logs, nil)), func() { close(ready) })
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("not subscribed")
	}

	for name, refused := range map[string]bool{"SPAM town": true, "book club": false} {
		code, answer, err := b.PostOpenIM("callbackBeforeSetGroupInfoExCommand", `{"callbackCommand":"callbackBeforeSetGroupInfoExCommand","groupID":"G1","groupName":"`+name+`"}`)
		if err != nil || code != 200 {
			t.Fatalf("post: %d %v %v", code, answer, err)
		}
		if got := answer["nextCode"] == 1.0; got != refused {
			t.Errorf("%q: answer %v; want refused %v", name, answer, refused)
		}
	}
	if _, _, err := b.PostOpenIM("callbackAfterQuitGroupCommand", `{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G1","userID":"alice"}`); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(20 * time.Second)
	for !strings.Contains(logs.String(), `msg="members left" group=G1 users=[alice]`) {
		select {
		case <-logs.wrote:
		case <-timeout:
			t.Fatalf("no quit logged:\n%s", logs.String())
		}
	}
}
