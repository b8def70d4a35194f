package server

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A live tail acks nothing, so the log never waits for it: events reach it as fast as they are
// stored, whether or not its subscriber reads them. They wait for the stream in a tailQueue of
// bounded size; a tail that falls that far behind is cut off rather than growing the bridge: what
// is queued is dropped, reading from the log stops, and the stream ends with ResourceExhausted
// naming the events missed as soon as the subscriber reads again (until then, the events gRPC
// already holds for it are all it costs). A consumer group, which the log waits for, is what gets
// every event.
type tailQueue struct {
	maxBytes int
	wake     chan struct{} // signalled when something is queued, the tail is cut off or the reader ends

	mu     sync.Mutex
	evs    []outgoing // guarded by mu
	bytes  int        // of evs and of the batch being sent; guarded by mu
	cut    bool       // the tail fell behind; guarded by mu
	missed int        // events dropped then; guarded by mu
	from   uint64     // the stream sequence of the first; guarded by mu
	err    error      // the reader's, which ends the tail; guarded by mu
}

func newTailQueue(maxBytes int) *tailQueue {
	return &tailQueue{maxBytes: maxBytes, wake: make(chan struct{}, 1)}
}

// push queues the events of one log message (at stream sequence seq), unless the queue is full
// already: then the tail is cut off, and what is queued is dropped with them. (One record can take
// the queue past its size, so that a large event does not cut off a tail that keeps up.) It
// reports whether the tail is cut off.
func (q *tailQueue) push(evs []outgoing, seq uint64) (cut bool) {
	if len(evs) == 0 {
		return false
	}
	size := 0
	for _, ev := range evs {
		size += ev.size
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.bytes >= q.maxBytes {
		q.cut = true
		q.missed = len(q.evs) + len(evs)
		q.from = seq
		if len(q.evs) > 0 {
			q.from = q.evs[0].seq
		}
		q.evs = nil
	} else {
		q.evs = append(q.evs, evs...)
		q.bytes += size
	}
	q.signal()
	return q.cut
}

// fail ends the tail with the reader's error.
func (q *tailQueue) fail(err error) {
	q.mu.Lock()
	q.err = err
	q.mu.Unlock()
	q.signal()
}

func (q *tailQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take waits for events and returns them (in buf's storage), having released the bytes of the
// batch taken before. It returns an error once the tail is cut off or the reader failed, and
// nothing when ctx ends.
func (q *tailQueue) take(ctx context.Context, buf []outgoing, sent int) ([]outgoing, error) {
	q.mu.Lock()
	q.bytes -= sent
	q.mu.Unlock()
	for {
		q.mu.Lock()
		switch {
		case q.cut:
			missed, from := q.missed, q.from
			q.mu.Unlock()
			return nil, status.Errorf(codes.ResourceExhausted,
				"live tail cut off: it fell more than %d bytes behind (--max-unacked-bytes) and missed %d events; it gets nothing from stream sequence %d on. A consumer group gets every event",
				q.maxBytes, missed, from)
		case q.err != nil:
			err := q.err
			q.mu.Unlock()
			return nil, err
		case len(q.evs) > 0:
			buf = append(buf[:0], q.evs...)
			clear(q.evs)
			q.evs = q.evs[:0]
			q.mu.Unlock()
			return buf, nil
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return nil, nil
		}
	}
}

// tail sends a live tail's events as its reader queues them in q (the instance's tailHub, or
// readTail for a replay); nothing is acked.
func (m *member) tail(ctx context.Context, q *tailQueue) error {
	var batch []outgoing
	sent := 0
	for {
		var err error
		batch, err = q.take(ctx, batch, sent)
		if err != nil || ctx.Err() != nil {
			if status.Code(err) == codes.ResourceExhausted {
				m.s.logger.Warn("live tail cut off", "subscriber", m.who, "err", err)
			}
			return err
		}
		sent = 0
		for _, ev := range batch {
			span := m.s.deliverSpan(ev.trace, "", ev.id, 1)
			err := m.stream.SendMsg(ev.response)
			endSpan(span, err)
			if err != nil {
				return err
			}
			sent += ev.size
		}
		m.gm.deliveries.Add(float64(len(batch)))
	}
}

// readTail queues the tail's events as the log delivers them, until the tail is cut off, ctx ends
// or the log fails. It never blocks on the subscriber.
func (m *member) readTail(ctx context.Context, msgs jetstream.MessagesContext, q *tailQueue) {
	for {
		msg, err := msgs.Next()
		if err != nil {
			if ctx.Err() == nil {
				q.fail(status.Errorf(codes.Unavailable, "live tail: %v", err))
			}
			return
		}
		seq, ok := forTails(msg)
		if !ok {
			continue
		}
		evs, bad, err := m.events(msg.Headers(), msg.Data(), seq)
		if err != nil || bad > 0 {
			m.s.unreadable(m.sub.Group, msg.Subject(), seq, bad, err)
		}
		if q.push(evs, seq) {
			msgs.Stop()
			m.s.metrics.tailCutoffs.Inc()
			return
		}
	}
}

// forTails tells whether a log message is for live tails (a dead letter redriven for its group is
// not), and its stream sequence.
func forTails(msg jetstream.Msg) (seq uint64, ok bool) {
	if msg.Headers().Get(groupHeader) != "" {
		return 0, false
	}
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	return seq, true
}
