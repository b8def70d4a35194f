package server

import (
	"context"
	"testing"
	"time"
)

func TestDedupTable(t *testing.T) {
	t.Parallel()
	d := newDedupTable(time.Minute)
	now := time.Unix(1000, 0)
	k := dedupKey{1}
	e, first := d.begin(k, now)
	if !first {
		t.Fatal("first begin: not first")
	}
	// A retry while the first is being stored waits for it; the store fails: the retry stores.
	if e2, first := d.begin(k, now); first || e2 != e {
		t.Fatal("second begin while storing: want the first's entry")
	}
	d.end(k, e, false, now)
	if e.wait(context.Background()) {
		t.Error("wait on a failed store: true")
	}
	e, first = d.begin(k, now)
	if !first {
		t.Fatal("begin after a failed store: not first")
	}
	d.end(k, e, true, now)
	if e2, first := d.begin(k, now.Add(30*time.Second)); first || !e2.wait(context.Background()) {
		t.Error("begin within the window after a store: want the stored entry")
	}
	// Past the window, the key is forgotten.
	if _, first := d.begin(k, now.Add(61*time.Second)); !first {
		t.Error("begin past the window: not first")
	}
	if len(d.stored) != 0 || len(d.order) != 0 || len(d.inflight) != 1 {
		t.Errorf("%d stored, %d in order, %d in flight; want 0, 0, 1", len(d.stored), len(d.order), len(d.inflight))
	}
	// One still being stored is not forgotten, whatever its age.
	if _, first := d.begin(k, now.Add(10*time.Minute)); first {
		t.Error("begin while the last one is still being stored: first")
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
		e, first := d.begin(k, now)
		if !first {
			t.Fatalf("key %d: not first", i)
		}
		d.end(k, e, true, now)
	}
	d.begin(dedupKey{0xff, 0xff, 0xff}, now)
	if len(d.stored) > maxDedupEntries || len(d.order) != len(d.stored) {
		t.Errorf("%d stored, %d in order; want at most %d", len(d.stored), len(d.order), maxDedupEntries)
	}
	if _, first := d.begin(dedupKey{}, now); !first {
		t.Error("the oldest key is still remembered past the bound")
	}
}
