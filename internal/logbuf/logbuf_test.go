package logbuf

import (
	"bytes"
	"io"
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

// flaky fails its first write.
type flaky struct {
	sink
	failed bool
}

func (f *flaky) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, io.ErrShortWrite
	}
	return f.sink.Write(p)
}

// TestRecoversFromAWriteError: a failed write is reported once, and later lines are written.
func TestRecoversFromAWriteError(t *testing.T) {
	f := &flaky{sink: sink{writes: make(chan struct{}, 1)}}
	w := NewWriter(f)
	_, _ = w.Write([]byte("lost\n"))
	if err := w.Flush(); err == nil {
		t.Error("the failed write was not reported")
	}
	_, _ = w.Write([]byte("kept\n"))
	_ = w.Flush()
	if got := f.String(); got != "kept\n" {
		t.Errorf("after the error: %q; want the later line", got)
	}
}

// TestWholeLines: a line that does not fit what is left of the buffer goes out after the buffered
// ones, never split between two writes.
func TestWholeLines(t *testing.T) {
	var writes []string
	w := NewWriter(writerFunc(func(p []byte) (int, error) { writes = append(writes, string(p)); return len(p), nil }))
	small := strings.Repeat("a", 60<<10) + "\n"
	big := strings.Repeat("b", 10<<10) + "\n"
	_, _ = w.Write([]byte(small))
	_, _ = w.Write([]byte(big))
	_ = w.Flush()
	if len(writes) != 2 || writes[0] != small || writes[1] != big {
		t.Errorf("%d writes of %v bytes; want the two lines whole", len(writes), lens(writes))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func lens(ss []string) []int {
	var n []int
	for _, s := range ss {
		n = append(n, len(s))
	}
	return n
}
