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
