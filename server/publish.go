package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/imbridge/imbridge/eventlog"
	"github.com/imbridge/imbridge/internal/bufpool"
)

// Group commit. Every callback waits for its event to be durable before it is answered, and each
// write to the log has a fixed cost (a message to parse, store with one write call, acknowledge and
// later deliver and ack) that dwarfs the event itself. So a few committers write for all callbacks:
// each takes whatever events are queued when it becomes free, stores the ones for one subject as a
// single record, and answers each waiting callback once that record is acknowledged. Under light
// load a record holds one event and nothing waits longer than before; under heavy load records grow
// with the queue.
//
// Two committers measured best on 2 cores (ingest, make bench): 1: 0.40x the baseline, 2: 0.40x,
// 4: 0.38x; two keep one write in flight while the next record forms.
const (
	committers      = 2
	maxRecordEvents = 64
)

// committer stores events in the log.
type committer struct {
	log *eventlog.Log
	// maxRecordBytes bounds the events of a record together; a larger event is stored alone.
	maxRecordBytes int
	queue          chan *pendingEvent
	wg             sync.WaitGroup
	metrics        *metrics // nil: not measured

	mu     sync.RWMutex
	closed bool // queue is closed; guarded by mu
}

// pendingEvent is one event waiting to be stored.
type pendingEvent struct {
	msg      *nats.Msg // subject, header and the encoded Event
	key      dedupKey  // its dedup key, zero if none (dedup.go): the record's Nats-Msg-Id when it is stored alone
	deadline time.Time // when its IM server is answered 503 if the log has not acknowledged it
	done     chan error
	// state is pendingQueued until a committer takes the event to write it (pendingTaken) or its
	// caller stops waiting for one (pendingAbandoned): whoever moves it first owns msg.Data.
	state atomic.Int32
}

const (
	pendingQueued = iota
	pendingTaken
	pendingAbandoned
)

func newCommitter(log *eventlog.Log, maxMessageBytes int) *committer {
	c := &committer{log: log, maxRecordBytes: min(maxRecordBytes, maxMessageBytes), queue: make(chan *pendingEvent, 4096)}
	for range committers {
		c.wg.Add(1)
		go c.run()
	}
	return c
}

// store returns once msg is in the log, or with the error that kept it out: errPublishBudget when
// the log has not acknowledged it by deadline. Once msg is queued it waits for the outcome even if
// ctx ends (the publish ends by deadline): the caller may reuse msg.Data as soon as store returns.
// key, if not zero, is the event's dedup key.
func (c *committer) store(ctx context.Context, msg *nats.Msg, key dedupKey, deadline time.Time) error {
	if msg.Header != nil {
		// A header (a verdict reply subject) belongs to one event, so the event cannot share a
		// record: publish it here, which also saves two handoffs on the path a before-callback's
		// IM server waits on.
		ctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		return c.publish(ctx, msg, 1)
	}
	p := &pendingEvent{msg: msg, key: key, deadline: deadline, done: make(chan error, 1)}
	if err := c.enqueue(ctx, p); err != nil {
		return err
	}
	// Both committers may be in a publish the log does not answer (an election): the event is not
	// left waiting past its deadline behind them.
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case err := <-p.done:
		return err
	case <-t.C:
		if p.state.CompareAndSwap(pendingQueued, pendingAbandoned) {
			return errPublishBudget // no committer will touch it
		}
		// Being written: its record's publish ends by the earliest deadline in it.
		return <-p.done
	}
}

func (c *committer) enqueue(ctx context.Context, p *pendingEvent) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return eventlog.ErrClosed
	}
	select {
	case c.queue <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops taking events and returns once the ones already queued are stored.
func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.queue)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *committer) run() {
	defer c.wg.Done()
	batch := make([]*pendingEvent, 0, maxRecordEvents)
	for p := range c.queue {
		batch = append(batch[:0], p)
	more:
		for len(batch) < maxRecordEvents {
			select {
			case p, ok := <-c.queue:
				if !ok {
					break more
				}
				batch = append(batch, p)
			default:
				break more
			}
		}
		c.commit(batch)
	}
}

// commit stores a batch: the events of each subject together, in arrival order.
func (c *committer) commit(batch []*pendingEvent) {
	for len(batch) > 0 {
		first := batch[0]
		group := []*pendingEvent{first}
		rest := batch[:0:0]
		size := len(first.msg.Data) + recordFraming
		for _, p := range batch[1:] {
			if p.msg.Subject == first.msg.Subject && size+len(p.msg.Data)+recordFraming <= c.maxRecordBytes {
				group = append(group, p)
				size += len(p.msg.Data) + recordFraming
			} else {
				rest = append(rest, p)
			}
		}
		c.write(group, size)
		batch = rest
	}
}

func (c *committer) write(group []*pendingEvent, size int) {
	// Events whose deadline passed while they were queued are not stored: their IM server is told
	// so now, and would have given up by the time the log answered.
	now := time.Now()
	var deadline time.Time // the earliest of the events written
	kept := group[:0]
	for _, p := range group {
		if !p.state.CompareAndSwap(pendingQueued, pendingTaken) {
			size -= len(p.msg.Data) + recordFraming // its caller gave up waiting: nobody to answer
			continue
		}
		if !now.Before(p.deadline) {
			p.done <- errPublishBudget
			size -= len(p.msg.Data) + recordFraming
			continue
		}
		kept = append(kept, p)
		if deadline.IsZero() || p.deadline.Before(deadline) {
			deadline = p.deadline
		}
	}
	group = kept
	if len(group) == 0 {
		return
	}
	msg := group[0].msg
	if len(group) > 1 {
		buf := bufpool.Get(size)
		defer bufpool.Put(buf)
		for _, p := range group {
			*buf = appendRecordEvent(*buf, p.msg.Data)
		}
		msg = &nats.Msg{Subject: msg.Subject, Data: *buf, Header: nats.Header{recordEventsHeader: []string{strconv.Itoa(len(group))}}}
	} else if key := group[0].key; key != (dedupKey{}) {
		msg.Header = nats.Header{jetstream.MsgIDHeader: []string{key.String()}} // the log drops a retry stored elsewhere
	}
	// Publish has copied the data by the time it returns (it waits for the log's acknowledgement).
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	err := c.publish(ctx, msg, len(group))
	cancel()
	for _, p := range group {
		p.done <- err
	}
}

// publish writes one record of events and measures it. A publish ctx ends is errPublishBudget.
func (c *committer) publish(ctx context.Context, msg *nats.Msg, events int) error {
	start := time.Now()
	_, err := c.log.Publish(ctx, msg)
	if err != nil && ctx.Err() != nil && !errors.Is(err, eventlog.ErrFull) && !errors.Is(err, eventlog.ErrClosed) {
		err = fmt.Errorf("%w: %w", errPublishBudget, err)
	}
	if c.metrics != nil && err == nil {
		c.metrics.publishDur.Observe(time.Since(start).Seconds())
		c.metrics.recordSize.Observe(float64(events))
	}
	return err
}
