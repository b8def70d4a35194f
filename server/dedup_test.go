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
	e, first := d.begin("k", now)
	if !first {
		t.Fatal("first begin: not first")
	}
	// A retry while the first is being stored waits for it; the store fails: the retry stores.
	if e2, first := d.begin("k", now); first || e2 != e {
		t.Fatal("second begin while storing: want the first's entry")
	}
	d.end("k", e, false)
	if e.wait(context.Background()) {
		t.Error("wait on a failed store: true")
	}
	e, first = d.begin("k", now)
	if !first {
		t.Fatal("begin after a failed store: not first")
	}
	d.end("k", e, true)
	if e2, first := d.begin("k", now.Add(30*time.Second)); first || !e2.wait(context.Background()) {
		t.Error("begin within the window after a store: want the stored entry")
	}
	// Past the window, the key is forgotten.
	if _, first := d.begin("k", now.Add(61*time.Second)); !first {
		t.Error("begin past the window: not first")
	}
	if len(d.entries) != 1 || len(d.order) != 1 {
		t.Errorf("%d entries, %d in order; want 1 and 1", len(d.entries), len(d.order))
	}
	// One still being stored is not forgotten, whatever its age.
	if _, first := d.begin("k", now.Add(10*time.Minute)); first {
		t.Error("begin while the last one is still being stored: first")
	}
}
