package server

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/imbridge/imbridge/eventlog"
)

// TestCommitterClose: events queued before close are stored; a store after close fails at once
// instead of waiting for a committer that is gone.
func TestCommitterClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := openLog(t)
	c := newCommitter(log, maxRecordBytes)
	msg := func() *nats.Msg { return &nats.Msg{Subject: eventlog.SubjectPrefix + ".test", Data: []byte("e")} }
	errs := make(chan error, 50)
	for range 50 {
		go func() { errs <- c.store(ctx, msg(), dedupKey{}, time.Now().Add(time.Minute)) }()
	}
	for range 50 {
		if err := <-errs; err != nil {
			t.Fatalf("store: %v", err)
		}
	}
	c.close()
	if err := c.store(ctx, msg(), dedupKey{}, time.Now().Add(time.Minute)); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("store after close: %v; want ErrClosed", err)
	}
	c.close() // twice is fine
}

// TestStoreDeadlineBehindBusyCommitters: while both committers wait on a log that takes no write
// (its stream is gone), an event queued behind them is answered at its own deadline, not theirs,
// and is never written.
func TestStoreDeadlineBehindBusyCommitters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := openLog(t)
	if err := log.JetStream().DeleteStream(ctx, log.Stream()); err != nil {
		t.Fatal(err)
	}
	c := newCommitter(log, maxRecordBytes)
	defer c.close()
	// One event per committer, each taken before the next is queued.
	var slow []*pendingEvent
	for i := range committers {
		p := &pendingEvent{msg: &nats.Msg{Subject: eventlog.SubjectPrefix + ".slow", Data: []byte{'s', byte(i)}}, deadline: time.Now().Add(3 * time.Second), done: make(chan error, 1)}
		if err := c.enqueue(ctx, p); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); p.state.Load() != pendingTaken; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no committer took the event")
			}
		}
		slow = append(slow, p)
	}
	start := time.Now()
	err := c.store(ctx, &nats.Msg{Subject: eventlog.SubjectPrefix + ".quick", Data: []byte("q")}, dedupKey{}, time.Now().Add(100*time.Millisecond))
	if took := time.Since(start); !errors.Is(err, errPublishBudget) || took < 100*time.Millisecond || took > 2*time.Second {
		t.Errorf("store behind busy committers: %v after %v; want errPublishBudget at its 100ms deadline", err, took)
	}
	for _, p := range slow {
		if err := <-p.done; !errors.Is(err, errPublishBudget) {
			t.Errorf("store to a log that takes nothing: %v; want errPublishBudget", err)
		}
	}
}

// BenchmarkCommitterStore: concurrent callbacks storing seed-sized events through the committers
// into the embedded log; each store returns once its record is acknowledged.
func BenchmarkCommitterStore(b *testing.B) {
	ctx := context.Background()
	log := openLog(b)
	c := newCommitter(log, maxRecordBytes)
	defer c.close()
	data := bytes.Repeat([]byte("e"), 400)
	b.SetParallelism(16) // callbacks in flight per core, as under load
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.store(ctx, &nats.Msg{Subject: eventlog.SubjectPrefix + ".bench", Data: data}, dedupKey{}, time.Now().Add(time.Minute)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
