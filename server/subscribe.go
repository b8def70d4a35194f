package server

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imbridge/imbridge/auth"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// MaxInFlight caps Subscription.max_in_flight: a member's unacked events are held in memory.
const MaxInFlight = 10000

// Subscribe streams events to one subscriber. A group is a durable JetStream consumer shared by its
// members; a subscription without a group is an ordered, ephemeral consumer of new events.
func (s *Server) Subscribe(stream pb.EventService_SubscribeServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	sub := first.GetSubscription()
	if err := validateSubscription(sub); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if !s.role.Delivers() && !sub.Decide {
		return errNotDeliver // an ingest instance takes deciders only
	}
	if err := auth.AllowSubscription(stream.Context(), sub); err != nil {
		return err
	}
	if sub.StartSequence > 0 {
		if err := s.checkStartSequence(stream.Context(), sub.StartSequence); err != nil {
			return err
		}
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.stopCtx, cancel)()

	m := newMember(s, sub)
	m.stream = stream
	var tail *tailQueue                  // a live tail's events; groups fetch instead
	var replay jetstream.MessagesContext // a replaying tail's
	if sub.Group == "" {
		tail = newTailQueue(m.maxBytes)
		m.sub = sub
		if sub.StartSequence == 0 && sub.StartTime == nil {
			leave, err := s.tails.join(ctx, sub.GetFilter(), tail)
			if err != nil {
				return err
			}
			defer leave()
		} else { // a replay reads from where it asked, through a consumer of its own
			cfg := jetstream.OrderedConsumerConfig{FilterSubjects: nonCatchAll(filterSubjects(sub.GetFilter())), InactiveThreshold: tailInactive}
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = startAt(sub, true)
			c, err := s.log.JetStream().OrderedConsumer(ctx, s.log.Stream(), cfg)
			if err != nil {
				return status.Errorf(codes.Unavailable, "live tail: %v", err)
			}
			it, err := c.Messages()
			if err != nil {
				return status.Errorf(codes.Unavailable, "live tail: %v", err)
			}
			defer it.Stop()
			defer context.AfterFunc(ctx, it.Stop)()
			replay = it
		}
	} else {
		var leave func()
		m.sub, m.logAckWait, leave, err = s.joinGroup(ctx, sub)
		if err != nil {
			return err
		}
		defer leave()
		m.ackWait = ackWaitOf(m.sub)
		m.maxDeliveries = maxDeliveriesOf(m.sub)
		m.max = int(sub.GetMaxInFlight())
		if m.max <= 0 {
			m.max = DefaultMaxInFlight
		}
		defer s.presence.join(m.sub)()
		if m.sub.Order == pb.Order_ORDER_IM_GROUP {
			defer s.joinOrdered(m)()
		}
	}
	m.exact = subjectExact(m.sub.GetFilter())
	m.gm = s.metrics.forGroup(sub.Group)
	subscribers := s.metrics.subscribers.WithLabelValues(sub.Group)
	subscribers.Inc()
	defer subscribers.Dec()
	if m.sub.Decide {
		m.undecide = sync.OnceFunc(s.deciders.add(sub.Group, m.sub.GetFilter()))
		defer m.undecide()
	}
	if err := stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Subscribed{
		Subscribed: &pb.Subscribed{Group: sub.Group, Decide: m.sub.Decide},
	}}); err != nil {
		return err
	}
	m.who = "(no token)"
	if p := auth.FromContext(stream.Context()); p != nil {
		m.who = p.Name
	}
	s.logger.Info("subscriber joined", "group", sub.Group, "decide", m.sub.Decide, "subscriber", m.who)
	defer s.logger.Info("subscriber left", "group", sub.Group)

	recvDone := make(chan error, 1)
	go func() {
		err := m.receive(ctx)
		recvDone <- err // before cancel: the handler, woken by it, returns this error
		if err != nil {
			cancel()
		}
	}()
	switch {
	case tail != nil:
		if replay != nil {
			go m.readTail(ctx, replay, tail)
		}
		err = m.tail(ctx, tail)
	case m.ordered != nil:
		err = m.serveOrdered(ctx)
	default:
		stopKeeping := m.keepHeld(ctx)
		err = m.fetch(ctx)
		stopKeeping()
		m.release()
	}
	cancel()
	if err != nil {
		return err
	}
	// The receive goroutine ends when this handler returns (Recv fails then); it is not waited for.
	// An ack it takes after release() finds nothing pending.
	select {
	case recvErr := <-recvDone:
		if recvErr != nil {
			return recvErr
		}
	default:
	}
	if s.stopCtx.Err() != nil {
		return status.Error(codes.Unavailable, "bridge shutting down")
	}
	return nil
}

// enter counts a subscriber in, unless the server is closing or serves its most subscribers.
func (s *Server) enter() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closing {
		return status.Error(codes.Unavailable, "bridge shutting down")
	}
	if s.nsubs >= s.maxSubs {
		return status.Errorf(codes.ResourceExhausted, "the bridge serves %d subscribers, its most (--max-subscribers): try again later or another instance", s.nsubs)
	}
	s.nsubs++
	s.subs.Add(1)
	return nil
}

// leave counts a subscriber out.
func (s *Server) leave() {
	s.closeMu.Lock()
	s.nsubs--
	s.closeMu.Unlock()
	s.subs.Done()
}

func nonCatchAll(subjects []string) []string {
	if subjects[0] == allSubjects {
		return nil
	}
	return subjects
}

func newMember(s *Server, sub *pb.Subscription) *member {
	return &member{
		s: s, sub: sub, pending: map[string]*record{}, records: map[uint64]*record{}, leaving: map[uint64]chan struct{}{},
		recordSize: 1, recordBytes: 1024, freed: make(chan struct{}, 1), maxBytes: s.maxUnackedBytes,
	}
}

// member is one connected subscriber, or the reader of an ordered group (ordered.go).
type member struct {
	s        *Server
	sub      *pb.Subscription // the group's settings for a group member
	stream   pb.EventService_SubscribeServer
	max      int           // most unacked events held
	maxBytes int           // most unacked bytes held (Options.MaxUnackedBytes)
	undecide func()        // removes this member from the deciders; nil if not one
	freed    chan struct{} // signalled when an ack frees a slot
	exact    bool          // the subject filter is exact: events are sent as stored (codec.go)
	who      string        // the subscriber's name, for the log
	gm       groupMetrics

	mu      sync.Mutex
	pending map[string]*record // delivered, not yet acked, by event id; guarded by mu
	records map[uint64]*record // the same records by stream sequence; guarded by mu
	// leaving holds, by stream sequence, the records being let go of (letGo), closed once they are;
	// guarded by mu.
	leaving  map[uint64]chan struct{}
	readOnly bool // the subscriber closed its side: it cannot ack; guarded by mu
	// heldBytes is the size of the log messages in records; guarded by mu.
	heldBytes int
	// recordSize is the recent average of events per record, and recordBytes of bytes, to size
	// fetches; guarded by mu.
	recordSize, recordBytes float64
	ackWait                 time.Duration // the group's
	// logAckWait is the consumer's: a record not acked, nor said to be in progress, for that long
	// is delivered again. Shorter than ackWait, the member keeps records held until ackWait passes.
	logAckWait time.Duration
	// maxDeliveries is the group's: a record delivered more often is dead-lettered.
	maxDeliveries int

	// A member of an ordered group gets its events from the group's reader here, and holds ordOut
	// of them (guarded by ordered.mu). The reader hands the events it fetches to dispatch, and pulls
	// pinned: pinID is the pin the log gave it (fetch's goroutine only).
	ordered *orderedGroup
	ordOut  int
	// keepFailed: while releasing, a redelivery entry was not written; the rest are not tried.
	releasing, keepFailed atomic.Bool
	dispatch              *orderedGroup
	pinned                bool
	pinID                 string
}

// receive handles acks and verdicts until the stream ends. When the subscriber closes its side
// (grpcurl -d '{...}' does), it can no longer ack or decide: from then on each event is acked as it
// is sent, and the member stops deciding.
func (m *member) receive(ctx context.Context) error {
	for {
		req, err := m.stream.Recv()
		if errors.Is(err, io.EOF) {
			m.goReadOnly()
			return nil
		}
		if err != nil {
			if ctx.Err() != nil || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		if m.sub.Group == "" {
			continue // a live tail has nothing to ack
		}
		switch r := req.Request.(type) {
		case *pb.SubscribeRequest_Ack:
			m.ack(nil, r.Ack.GetEventId())
			if more := r.Ack.GetMoreEventIds(); len(more) > 0 {
				m.ack(nil, more...)
			}
		case *pb.SubscribeRequest_Nack:
			reason, delay, err := checkNack(r.Nack)
			if err != nil {
				return err
			}
			m.nack(reason, delay, r.Nack.GetEventId())
			if more := r.Nack.GetMoreEventIds(); len(more) > 0 {
				m.nack(reason, delay, more...)
			}
		case *pb.SubscribeRequest_Verdict:
			if err := m.checkVerdict(r.Verdict); err != nil {
				return err
			}
			m.ack(r.Verdict.GetVerdict(), r.Verdict.GetEventId())
		case *pb.SubscribeRequest_Subscription:
			return status.Error(codes.InvalidArgument, "subscription already set")
		}
	}
}

func (m *member) goReadOnly() {
	if m.undecide != nil {
		m.undecide()
	}
	if m.ordered != nil {
		m.mu.Lock()
		m.readOnly = true
		m.mu.Unlock()
		m.ordered.ackHeld(m)
		return
	}
	m.mu.Lock()
	m.readOnly = true
	ids := make([]string, 0, len(m.pending))
	for id := range m.pending {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	m.ack(nil, ids...)
}

// Subscribers is how many Subscribe streams this instance serves.
func (s *Server) Subscribers() int {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	return s.nsubs
}

func decisionLabel(v *pb.Verdict) string {
	if refused(v) {
		return "refuse"
	}
	return "allow"
}

// MaxNackDelay bounds Nack.delay.
const MaxNackDelay = time.Hour

// checkNack refuses (InvalidArgument, ending the stream) a nack whose reason or delay is out of
// bounds, and returns them.
func checkNack(n *pb.Nack) (string, time.Duration, error) {
	reason := n.GetReason()
	if len(reason) > maxReasonBytes || !utf8.ValidString(reason) {
		return "", 0, status.Errorf(codes.InvalidArgument, "nack of event %s: reason: at most %d bytes of UTF-8", n.GetEventId(), maxReasonBytes)
	}
	var delay time.Duration
	if d := n.GetDelay(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() < 0 || d.AsDuration() > MaxNackDelay {
			return "", 0, status.Errorf(codes.InvalidArgument, "nack of event %s: delay: want 0 to %v", n.GetEventId(), MaxNackDelay)
		}
		delay = d.AsDuration()
	}
	return reason, delay, nil
}

// checkStartSequence refuses a start past the log's end: the consumer would wait for that sequence,
// skipping every event stored until then.
func (s *Server) checkStartSequence(ctx context.Context, seq uint64) error {
	stream, err := s.log.JetStream().Stream(ctx, s.log.Stream()) // asks the log: its info is fresh
	if err != nil {
		return status.Errorf(codes.Unavailable, "event log: %v", err)
	}
	if last := stream.CachedInfo().State.LastSeq; seq > last+1 {
		return status.Errorf(codes.InvalidArgument, "start_sequence %d is past the end of the event log (its last record is %d; %d starts with the next one)", seq, last, last+1)
	}
	return nil
}
