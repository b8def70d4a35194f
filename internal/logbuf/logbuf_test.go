package logbuf

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records what reaches the underlying writer and signals each write.
type sink struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes chan struct{}
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	select {
	case s.writes <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestInfoWaitsWarnFlushes(t *testing.T) {
	s := &sink{writes: make(chan struct{}, 1)}
	w := NewWriter(s)
	log := slog.New(Handler(slog.NewTextHandler(w, nil), w))
	log.Info("first")
	log.Info("second")
	if got := s.String(); got != "" {
		t.Fatalf("info lines written at once: %q", got)
	}
	log.Warn("third")
	got := s.String()
	if !strings.Contains(got, "msg=first") || !strings.Contains(got, "msg=second") || !strings.Contains(got, "msg=third") {
		t.Fatalf("after a warning: %q; want every line out, in order", got)
	}
	if strings.Index(got, "first") > strings.Index(got, "third") {
		t.Errorf("out of order: %q", got)
	}
}

func TestFlushesByItself(t *testing.T) {
	s := &sink{writes: make(chan struct{}, 1)}
	w := NewWriter(s)
	slog.New(Handler(slog.NewTextHandler(w, nil), w)).With("k", "v").Info("later")
	select {
	case <-s.writes:
	case <-time.After(10 * time.Second):
		t.Fatal("an info line was never written out")
	}
	if !strings.Contains(s.String(), "msg=later k=v") {
		t.Errorf("got %q", s.String())
	}
}

func TestClose(t *testing.T) {
	s := &sink{writes: make(chan struct{}, 1)}
	w := NewWriter(s)
	if _, err := w.Write([]byte("line\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil || s.String() != "line\n" {
		t.Errorf("after Close: %q, %v", s.String(), err)
	}
}
