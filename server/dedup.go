package server

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Dedup of IM retries. Tencent retries an after-callback that timed out when its console says so,
// and a proxy in front of the bridge may retry any request. A retry must be answered like the first
// and stored once. A callback is known by what its IM server gives it: Tencent's RequestID, OpenIM's
// operationID, with the command and the body (SHA-256), so that the several callbacks of one OpenIM
// operation stay apart. A callback without one is never taken for another: two real events may have
// the same body.
//
// Two layers, because group commit stores callbacks that arrive together as one record and
// JetStream deduplicates whole messages:
//   - this instance remembers the callbacks it stored or is storing (dedupTable), for the window or
//     its newest maxDedupEntries, whichever is shorter (about 60 bytes each): a retry while the first
//     is being stored waits for it, one after gets OK at once;
//   - a callback stored as a record of its own carries its key as the Nats-Msg-Id, so the log itself
//     drops a retry that reaches another instance within the stream's duplicate window (the same
//     setting). A retry of a callback that shared a record, reaching another instance, is stored
//     twice: subscribers see two events with the same Event.metadata and body.
//
// Before-callbacks are not deduplicated: Tencent never retries them, and a retried one is decided
// again rather than answered with a verdict another instance holds.
const maxDedupEntries = 1 << 17

// dedupKey identifies a callback, if its IM server says which one it is: 128 bits of SHA-256.
type dedupKey [16]byte

// String is the key as the log's message id.
func (k dedupKey) String() string { return base64.RawURLEncoding.EncodeToString(k[:]) }

// dedupKeyOf identifies ev, if its IM server says which callback it is.
func dedupKeyOf(ev *pb.Event) (dedupKey, bool) {
	id := ev.GetMetadata().GetRequestId()
	if ev.Source == pb.Source_SOURCE_OPENIM {
		id = ev.GetMetadata().GetOperationId()
	}
	if id == "" {
		return dedupKey{}, false
	}
	h := sha256.New()
	h.Write([]byte{byte(ev.Source)})
	h.Write([]byte(ev.Command))
	h.Write([]byte{0})
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write(ev.RawBody)
	var sum [sha256.Size]byte
	var k dedupKey
	copy(k[:], h.Sum(sum[:0]))
	return k, true
}

// dedupTable is what this instance remembers of the callbacks it stored, and is storing. It
// allocates nothing per callback besides its map entries: a retry that arrives while the first is
// being stored (rare) waits on a condition variable.
type dedupTable struct {
	window time.Duration

	mu       sync.Mutex
	cond     *sync.Cond            // broadcast when a store ends and a retry waits; L is &mu
	waiting  int                   // retries waiting on cond; guarded by mu
	inflight map[dedupKey]struct{} // being stored; guarded by mu
	stored   map[dedupKey]struct{} // stored within the window; guarded by mu
	order    []dedupAt             // stored, oldest first (a queue); guarded by mu
}

type dedupAt struct {
	key dedupKey
	at  time.Time
}

func newDedupTable(window time.Duration) *dedupTable {
	d := &dedupTable{window: window, inflight: map[dedupKey]struct{}{}, stored: map[dedupKey]struct{}{}}
	d.cond = sync.NewCond(&d.mu)
	return d
}

// claim decides what to do with a callback under key: store it (first: the caller then calls end),
// or not, as one stored already (stored). A callback under key being stored is waited for; if its
// store fails, the caller stores its own. Neither, when ctx ends first.
func (d *dedupTable) claim(ctx context.Context, key dedupKey, now time.Time) (first, stored bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expire(now)
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		if _, ok := d.stored[key]; ok {
			return false, true
		}
		if _, ok := d.inflight[key]; !ok {
			d.inflight[key] = struct{}{}
			return true, false
		}
		if ctx.Err() != nil {
			return false, false
		}
		if stop == nil {
			stop = context.AfterFunc(ctx, func() {
				d.mu.Lock()
				d.cond.Broadcast()
				d.mu.Unlock()
			})
		}
		d.waiting++
		d.cond.Wait()
		d.waiting--
	}
}

// end settles a claim: a callback stored is remembered, one that was not is forgotten (a retry
// stores it).
func (d *dedupTable) end(key dedupKey, stored bool, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.inflight, key)
	if stored {
		d.stored[key] = struct{}{}
		d.order = append(d.order, dedupAt{key: key, at: now})
	}
	if d.waiting > 0 {
		d.cond.Broadcast()
	}
}

// expire forgets what was stored before the window, and the oldest past maxDedupEntries.
func (d *dedupTable) expire(now time.Time) {
	n := 0
	for n < len(d.order) && (now.Sub(d.order[n].at) > d.window || len(d.order)-n > maxDedupEntries) {
		delete(d.stored, d.order[n].key)
		n++
	}
	if n > 0 {
		d.order = d.order[n:]
		if cap(d.order) > 1024 && len(d.order) < cap(d.order)/4 {
			d.order = append([]dedupAt(nil), d.order...)
		}
	}
}
