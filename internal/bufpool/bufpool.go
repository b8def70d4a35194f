// Package bufpool keeps byte buffers for the per-callback hot path (request bodies, encoded events,
// log records), which are dead once the callback is answered.
package bufpool

import "sync"

// MaxKept is the largest buffer kept: larger ones are left to the GC, so that one huge callback
// does not pin its memory.
const MaxKept = 64 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// Get returns an empty buffer with at least n bytes of capacity.
func Get(n int) *[]byte {
	b := pool.Get().(*[]byte)
	if cap(*b) < n {
		*b = make([]byte, 0, n)
	}
	*b = (*b)[:0]
	return b
}

// Put returns a buffer; the caller must not use it afterwards.
func Put(b *[]byte) {
	if cap(*b) <= MaxKept {
		pool.Put(b)
	}
}
