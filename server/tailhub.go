package server

import (
	"context"
	"slices"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// tailHub reads the log once for all the live tails of this instance and queues each tail's events
// (tail.go): a tail costs a queue and a filter test per event, not a JetStream consumer of its own.
// The reader runs while the instance has live tails; it starts at the log's end, as a live tail does.
// A record's events are decoded once and their encoded responses shared by every tail that takes
// them, so tails that fall behind hold the same bytes: the memory is bounded by one tail's queue of
// events (--max-unacked-bytes) and a small entry per queued event per tail.
//
// Tails that replay (start_sequence, start_time) read through a consumer of their own.
type tailHub struct {
	s *Server

	mu     sync.Mutex
	feeds  map[*tailFeed]struct{} // guarded by mu
	reader *hubReader             // nil when none runs; guarded by mu
}

// hubReader is one run of the hub's reader.
type hubReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{} // closed once the reader reads from the log's end, or failed to (err)
	err    error
}

// tailInactive is how long the log keeps a tail's consumer once nobody reads it (the client stops
// reading without deleting it; its default is 5 minutes).
const tailInactive = 30 * time.Second

// tailFeed is one live tail's place in the hub.
type tailFeed struct {
	q        *tailQueue
	filter   *pb.EventFilter
	subjects []string // the filter's subjects
	exact    bool     // the subjects select exactly the events the filter matches
}

func newTailHub(s *Server) *tailHub {
	return &tailHub{s: s, feeds: map[*tailFeed]struct{}{}}
}

// join adds a live tail with filter f, whose events go to q, once the hub reads from the log's end:
// every record stored after join returns reaches q. It returns the function that takes the tail out
// again.
func (h *tailHub) join(ctx context.Context, f *pb.EventFilter, q *tailQueue) (leave func(), err error) {
	feed := &tailFeed{q: q, filter: f, subjects: filterSubjects(f), exact: subjectExact(f)}
	h.mu.Lock()
	h.feeds[feed] = struct{}{}
	r := h.reader
	if r == nil {
		r = &hubReader{ready: make(chan struct{})}
		r.ctx, r.cancel = context.WithCancel(h.s.stopCtx)
		h.reader = r
		go h.read(r)
	}
	h.mu.Unlock()
	leave = func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.feeds, feed)
		if len(h.feeds) == 0 && h.reader != nil {
			h.reader.cancel()
			h.reader = nil
		}
	}
	select {
	case <-r.ready:
		err = r.err
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		leave()
		return nil, err
	}
	return leave, nil
}

// read hands every record stored from its start on to the tails, until the last tail leaves or the
// log fails: then every tail ends with Unavailable, and the next tail to join starts another reader.
func (h *tailHub) read(r *hubReader) {
	ctx := r.ctx
	c, err := h.s.log.JetStream().OrderedConsumer(ctx, h.s.log.Stream(), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverNewPolicy, InactiveThreshold: tailInactive,
	})
	var it jetstream.MessagesContext
	if err == nil {
		it, err = c.Messages() // the consumer, made by OrderedConsumer, reads every record stored since
	}
	if err != nil {
		r.err = status.Errorf(codes.Unavailable, "live tail: %v", err)
		close(r.ready)
		h.fail(r, r.err)
		return
	}
	close(r.ready)
	defer it.Stop()
	defer context.AfterFunc(ctx, it.Stop)()
	var rec tailRecord
	for {
		msg, err := it.Next()
		if err != nil {
			h.fail(r, status.Errorf(codes.Unavailable, "live tail: %v", err))
			return
		}
		seq, ok := forTails(msg)
		if !ok {
			continue
		}
		rec.reset(msg.Subject(), msg.Headers(), msg.Data(), seq)
		if rec.err != nil {
			h.s.unreadable("", msg.Subject(), seq, 0, rec.err)
			continue
		}
		h.mu.Lock()
		if ctx.Err() != nil { // the last tail left: any tail now joined belongs to a new reader
			h.mu.Unlock()
			return
		}
		for feed := range h.feeds {
			if feed.q.push(rec.take(h.s, feed), seq) {
				delete(h.feeds, feed) // cut off (tail.go)
				h.s.metrics.tailCutoffs.Inc()
			}
		}
		if len(h.feeds) == 0 { // the last tails were cut off: nobody to read for
			r.cancel()
			h.reader = nil
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}

// fail ends every tail of reader r with err, unless r was stopped.
func (h *tailHub) fail(r *hubReader, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reader != r || r.ctx.Err() != nil { // stopped: its last tail left, or the bridge stops
		return
	}
	for feed := range h.feeds {
		feed.q.fail(err)
	}
	clear(h.feeds)
	r.cancel()
	h.reader = nil
}

// tailRecord is one log record as the tails take it: its events, encoded once for the tails that
// take them as stored and decoded once for those that test them.
type tailRecord struct {
	subject string
	seq     uint64
	raw     [][]byte
	err     error

	stored  []outgoing // each event as stored, once asked for; nil entries' ids are ""
	decoded []*pb.Event
	tried   bool // stored and decoded are filled in
	scratch []outgoing
}

func (r *tailRecord) reset(subject string, hdr map[string][]string, data []byte, seq uint64) {
	r.subject, r.seq = subject, seq
	r.raw, r.err = recordEvents(hdr, data)
	r.stored, r.decoded, r.tried = r.stored[:0], r.decoded[:0], false
}

// take returns the record's events feed wants, in a buffer reused for the next feed (push copies).
func (r *tailRecord) take(s *Server, feed *tailFeed) []outgoing {
	if feed.exact && !slices.ContainsFunc(feed.subjects, func(f string) bool { return natsserver.SubjectMatchesFilter(r.subject, f) }) {
		return nil
	}
	r.fill(s)
	out := r.scratch[:0]
	for i, o := range r.stored {
		if o.id == "" {
			continue // unreadable
		}
		if feed.exact {
			out = append(out, o)
		} else if ev := r.decoded[i]; matches(feed.filter, ev) {
			out = append(out, outgoing{id: ev.Id, response: &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Event{Event: ev}}, size: o.size, seq: r.seq, trace: ev.TraceContext})
		}
	}
	r.scratch = out
	return out
}

// fill checks and decodes the record's events, once.
func (r *tailRecord) fill(s *Server) {
	if r.tried {
		return
	}
	r.tried = true
	bad := 0
	for _, b := range r.raw {
		id, ok := checkEvent(b)
		ev := new(pb.Event)
		if ok && proto.Unmarshal(b, ev) == nil && deliverable(ev) {
			ev.Sequence = r.seq
			o := outgoing{id: id, response: eventResponse(b, r.seq), size: len(b), seq: r.seq}
			if s.tracer != nil {
				o.trace = eventTraceContext(b)
			}
			r.stored, r.decoded = append(r.stored, o), append(r.decoded, ev)
			continue
		}
		bad++
		r.stored, r.decoded = append(r.stored, outgoing{}), append(r.decoded, nil)
	}
	if bad > 0 {
		s.unreadable("", r.subject, r.seq, bad, nil)
	}
}
