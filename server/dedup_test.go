package server

import (
	"context"
	"runtime"
	"testing"
	"time"
)

func TestDedupTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDedupTable(time.Minute)
	now := time.Unix(1000, 0)
	k := dedupKey{1}
	if first, _ := d.claim(ctx, k, now); !first {
		t.Fatal("first claim: not first")
	}
	// A retry while the first is being stored waits for it; the store fails: the retry stores.
	type result struct{ first, stored bool }
	retry := make(chan result)
	go func() {
		first, stored := d.claim(ctx, k, now)
		retry <- result{first, stored}
	}()
	waitWaiting(t, d, 1)
	d.end(k, false, now)
	if r := <-retry; !r.first {
		t.Fatalf("retry after a failed store: %+v; want to store it", r)
	}
	d.end(k, true, now)
	if first, stored := d.claim(ctx, k, now.Add(30*time.Second)); first || !stored {
		t.Error("claim within the window after a store: want stored")
	}
	// A waiter whose context ends gives up.
	k2 := dedupKey{2}
	d.claim(ctx, k2, now)
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan result)
	go func() {
		first, stored := d.claim(cctx, k2, now)
		gaveUp <- result{first, stored}
	}()
	waitWaiting(t, d, 1)
	cancel()
	if r := <-gaveUp; r.first || r.stored {
		t.Errorf("waiting claim whose context ends: %+v; want neither", r)
	}
	// A retry waiting while the first is stored is told so.
	go func() {
		first, stored := d.claim(ctx, k2, now)
		retry <- result{first, stored}
	}()
	waitWaiting(t, d, 1)
	d.end(k2, true, now)
	if r := <-retry; r.first || !r.stored {
		t.Errorf("retry waiting for a store that succeeds: %+v; want stored", r)
	}
	// Past the window, the key is forgotten.
	if first, _ := d.claim(ctx, k, now.Add(61*time.Second)); !first {
		t.Error("claim past the window: not first")
	}
	if len(d.stored) != 0 || len(d.order) != 0 || len(d.inflight) != 1 {
		t.Errorf("%d stored, %d in order, %d in flight; want 0, 0, 1", len(d.stored), len(d.order), len(d.inflight))
	}
}

// TestDedupTableBounded: past maxDedupEntries the oldest are forgotten, whatever the window.
func TestDedupTableBounded(t *testing.T) {
	t.Parallel()
	d := newDedupTable(time.Hour)
	now := time.Unix(1000, 0)
	for i := range maxDedupEntries + 10 {
		var k dedupKey
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		if first, _ := d.claim(context.Background(), k, now); !first {
			t.Fatalf("key %d: not first", i)
		}
		d.end(k, true, now)
	}
	d.claim(context.Background(), dedupKey{0xff, 0xff, 0xff}, now)
	if len(d.stored) > maxDedupEntries || len(d.order) != len(d.stored) {
		t.Errorf("%d stored, %d in order; want at most %d", len(d.stored), len(d.order), maxDedupEntries)
	}
	if first, _ := d.claim(context.Background(), dedupKey{}, now); !first {
		t.Error("the oldest key is still remembered past the bound")
	}
}

// waitWaiting waits until n claims wait on d.
func waitWaiting(t *testing.T, d *dedupTable, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.mu.Lock()
		w := d.waiting
		d.mu.Unlock()
		if w == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d claims waiting; want %d", w, n)
		}
		runtime.Gosched()
	}
}
