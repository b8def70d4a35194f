package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Subscription says what to receive; the group's settings (Filter, AckWait, MaxDeliveries, Order)
// are the group's, and members of a group must agree on them (Subscription in the proto).
type Subscription struct {
	// Group is the consumer group, [A-Za-z0-9_-]{1,64}: durable, its members share its events.
	// Empty: a live tail of new events, nothing kept while disconnected beyond what the log holds
	// (the client resumes after the last event it saw).
	Group string
	// Filter selects events; nil: every event.
	Filter *pb.EventFilter
	// MaxInFlight is how many events the handler runs on at once, and the most events the bridge
	// sends this member before it acks. Default 16.
	MaxInFlight int
	// AckWait: how long an event may stay unacked before the group gets it again. 0: the group's
	// (30s for a new one).
	AckWait time.Duration
	// MaxDeliveries: deliveries before an event becomes a dead letter. 0: the group's (10 for a new
	// one).
	MaxDeliveries int
	// Order: pb.Order_ORDER_IM_GROUP hands the events of each IM group one at a time, in order.
	Order pb.Order
	// Start: where a new group starts. Unset: with the oldest event the log keeps (a decider
	// group: with new events); pb.StartPosition_START_POSITION_NEW: with new events.
	Start pb.StartPosition
	// OnSubscribed, if set, is called each time the bridge confirms the subscription: at first, and
	// after each reconnect (a service may report itself ready from then on).
	OnSubscribed func()
}

// DefaultMaxInFlight is Subscription.MaxInFlight's default.
const DefaultMaxInFlight = 16

// Handler handles the events of a subscription: a HandlerFunc or a DeciderFunc.
type Handler interface {
	handle(ctx context.Context, ev *pb.Event) (*pb.Verdict, error)
	decides() bool
}

// HandlerFunc handles an event: nil acks it; an error nacks it with the error as the reason, and
// the group gets it again (after Subscription.MaxDeliveries deliveries it becomes a dead letter).
// For a live tail nothing is acked, and an error only goes to the error handler.
type HandlerFunc func(ctx context.Context, ev *pb.Event) error

func (f HandlerFunc) handle(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
	return nil, f(ctx, ev)
}

func (HandlerFunc) decides() bool { return false }

// DeciderFunc decides before-callbacks (the subscription decides: it needs a group), and handles
// the other events its filter selects like a HandlerFunc, its verdict ignored. Its ctx ends at the
// event's decide_by (read on this machine's clock): a verdict after it is too late, and the
// callback was answered with its failure policy. An error nacks the event (another member may
// decide it in time; a failing decider never allows). An event that comes past its decide_by is not
// handed to the handler: it is acked 2 s after that deadline (an ack counts as an allow while the
// bridge still waits), nacked to come back then before.
type DeciderFunc func(ctx context.Context, ev *pb.Event) (*pb.Verdict, error)

func (f DeciderFunc) handle(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
	return f(ctx, ev)
}

func (DeciderFunc) decides() bool { return true }

// Subscribe runs the subscription until ctx ends (it returns ctx's error), the Client is closed
// (ErrClosed), or the bridge refuses it for good: INVALID_ARGUMENT, FAILED_PRECONDITION (a group in
// use with other settings, an instance that serves no such subscription), PERMISSION_DENIED,
// UNAUTHENTICATED, UNIMPLEMENTED; it returns that error. A stream that breaks is opened again after
// a backoff; events handled but not yet acked come again then. Subscribe may run several
// subscriptions on one Client at once.
func (c *Client) Subscribe(ctx context.Context, sub Subscription, h Handler) error {
	if h == nil {
		return errors.New("client: no handler")
	}
	if h.decides() && sub.Group == "" {
		return errors.New("client: a decider needs a group")
	}
	s := &session{c: c, sub: sub, h: h, done: newRecent(recentIDs)}
	failures := 0
	for {
		progressed, err := s.run(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case c.closed.Load():
			return ErrClosed
		case s.sub.Group == "" && s.lastSeq > 0 && status.Code(err) == codes.InvalidArgument:
			// A live tail resuming past the log's end (the log was made anew): from its end.
			c.report(fmt.Errorf("client: live tail: %w (resubscribing from the log's end)", err))
			s.lastSeq, s.seenAt = 0, nil
			continue
		case permanent(err):
			return err
		}
		c.report(fmt.Errorf("client: subscription %q: %w (reconnecting)", sub.Group, err))
		if progressed {
			failures = 0
		}
		failures++
		if err := sleep(ctx, c.backoff(failures)); err != nil {
			return err
		}
	}
}

// permanent tells whether a stream's error means the subscription cannot succeed as it is.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented:
		return true
	}
	return false
}

// recentIDs is how many acked event ids a subscription remembers, to skip events that come again.
const recentIDs = 4096

// maxAckBatch is the most ids sent in one Ack.
const maxAckBatch = 256

// maxReasonBytes is the bridge's bound on a nack's reason.
const maxReasonBytes = 1024

// session is one subscription across its streams.
type session struct {
	c    *Client
	sub  Subscription
	h    Handler
	done *recent // ids acked lately
	// A live tail resumes at lastSeq, skipping the ids it saw there (events of a record share it).
	lastSeq uint64
	seenAt  map[string]bool
}

// run opens one stream and serves it until it ends. progressed: events came (the backoff starts
// again).
func (s *session) run(ctx context.Context) (progressed bool, err error) {
	outer := ctx // a live tail's handlers run on: their events do not come again
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.c.events.Subscribe(ctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: s.request()}}); err != nil {
		_, err = stream.Recv() // the status, if the bridge refused
		return false, err
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	if first.GetSubscribed() == nil {
		return false, fmt.Errorf("bridge answered %v to the subscription", first)
	}
	if s.sub.OnSubscribed != nil {
		s.sub.OnSubscribed()
	}

	max := s.sub.MaxInFlight
	if max <= 0 {
		max = DefaultMaxInFlight
	}
	out := make(chan *pb.SubscribeRequest, max)
	var sendErr error // set before sent is closed
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if sendErr = send(stream, out); sendErr != nil {
			cancel() // Recv ends too
		}
	}()
	slots := make(chan struct{}, max)
	var handlers sync.WaitGroup
	defer func() {
		cancel() // handlers still running are told through their ctx, and must return
		handlers.Wait()
		close(out)
		<-sent
		if sendErr != nil && !errors.Is(sendErr, io.EOF) {
			err = sendErr
		}
	}()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errEnded
			}
			return progressed, err
		}
		ev := resp.GetEvent()
		if ev == nil {
			continue
		}
		progressed = true
		if s.sub.Group == "" && !s.fresh(ev) {
			continue
		}
		if s.sub.Group != "" && s.done.has(ev.Id) {
			out <- ackOf(ev.Id) // handled before; its ack was lost
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return progressed, ctx.Err()
		}
		hctx := ctx
		if s.sub.Group == "" {
			hctx = outer
		}
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			defer func() { <-slots }()
			s.handle(hctx, ctx, ev, out)
		}()
	}
}

// request is the Subscription message of the next stream.
func (s *session) request() *pb.Subscription {
	r := &pb.Subscription{
		Group:         s.sub.Group,
		Filter:        s.sub.Filter,
		Decide:        s.h.decides(),
		Start:         s.sub.Start,
		MaxInFlight:   uint32(max(s.sub.MaxInFlight, 0)),
		MaxDeliveries: uint32(max(s.sub.MaxDeliveries, 0)),
		Order:         s.sub.Order,
	}
	if r.MaxInFlight == 0 {
		r.MaxInFlight = DefaultMaxInFlight
	}
	if s.sub.AckWait > 0 {
		r.AckWait = durationpb.New(s.sub.AckWait)
	}
	if s.sub.Group == "" && s.lastSeq > 0 {
		r.Start, r.StartSequence = pb.StartPosition_START_POSITION_UNSPECIFIED, s.lastSeq
	}
	return r
}

// fresh tells whether a live tail's event is new to it, and notes it.
func (s *session) fresh(ev *pb.Event) bool {
	switch {
	case ev.Sequence > s.lastSeq:
		s.lastSeq, s.seenAt = ev.Sequence, map[string]bool{}
	case ev.Sequence < s.lastSeq || s.seenAt[ev.Id]:
		return false
	}
	s.seenAt[ev.Id] = true
	return true
}

// handle runs the handler on ev (with ctx) and queues its ack, nack or verdict while the stream
// (streamCtx) lasts.
func (s *session) handle(ctx, streamCtx context.Context, ev *pb.Event, out chan<- *pb.SubscribeRequest) {
	deciding := s.h.decides() && ev.GetPhase() == pb.Phase_PHASE_BEFORE
	// decideBy, answered: the event's deadline, and when the bridge has surely answered the IM
	// server without this decider; zero when it is not decided here.
	var decideBy, answered time.Time
	if deciding && ev.GetDecideBy() != nil {
		decideBy = ev.GetDecideBy().AsTime()
		answered = decideBy.Add(lateMargin)
		if !time.Now().Before(decideBy) {
			// Nobody can decide it now. Acked once the bridge has surely answered (an ack before
			// that would count as an allow); until then handed back, to come again after it.
			s.c.report(fmt.Errorf("client: group %s: event %s came after its decide_by: not decided", s.sub.Group, ev.Id))
			out <- s.late(ev.Id, answered)
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, decideBy)
		defer cancel()
	}
	v, err := s.call(ctx, ev)
	if s.sub.Group == "" {
		if err != nil {
			s.c.report(fmt.Errorf("client: live tail: event %s: %w", ev.Id, err))
		}
		return
	}
	if streamCtx.Err() != nil {
		return // the stream is gone: the event comes again
	}
	if err == nil && deciding {
		if v == nil {
			v = Allow()
		}
		if err = checkVerdict(v); err == nil {
			// Not remembered as done: a verdict lost with the stream must be decided again, not
			// acked (an ack allows).
			out <- &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Verdict{Verdict: &pb.VerdictReply{EventId: ev.Id, Verdict: v}}}
			return
		}
	}
	if err != nil {
		s.c.report(fmt.Errorf("client: group %s: event %s nacked: %w", s.sub.Group, ev.Id, err))
		nack := &pb.Nack{EventId: ev.Id, Reason: reason(err)}
		if d, ok := retryAfter(err); ok {
			nack.Delay = durationpb.New(d)
		}
		if !decideBy.IsZero() && !time.Now().Before(decideBy) {
			// Failed past its deadline: it comes again once the bridge has surely answered, and is
			// acked then (a failing decider never allows).
			nack.Delay = durationpb.New(max(time.Until(answered), nack.GetDelay().AsDuration()))
		}
		out <- &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: nack}}
		return
	}
	s.done.add(ev.Id)
	out <- ackOf(ev.Id)
}

// lateMargin is how long after an event's decide_by the client takes the bridge to have answered
// without it: the bridge's own timer, and the two clocks apart.
const lateMargin = 2 * time.Second

// late settles a before-callback that came past its decide_by: an ack once answered has passed,
// else a nack that brings it back then.
func (s *session) late(id string, answered time.Time) *pb.SubscribeRequest {
	if wait := time.Until(answered); wait > 0 {
		return &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{
			EventId: id, Reason: "past its decide_by", Delay: durationpb.New(wait),
		}}}
	}
	return ackOf(id)
}

// call runs the handler, a panic turned into an error.
func (s *session) call(ctx context.Context, ev *pb.Event) (v *pb.Verdict, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return s.h.handle(ctx, ev)
}

// checkVerdict makes a verdict's free text valid UTF-8 (the stream would end on it otherwise) and
// tells whether the rest can be sent.
func checkVerdict(v *pb.Verdict) error {
	v.Message, v.Detail = strings.ToValidUTF8(v.Message, "\uFFFD"), strings.ToValidUTF8(v.Detail, "\uFFFD")
	if _, err := proto.Marshal(v); err != nil {
		return fmt.Errorf("verdict cannot be sent: %w", err)
	}
	return nil
}

func ackOf(id string) *pb.SubscribeRequest {
	return &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{EventId: id}}}
}

// reason is err's text as a nack's reason: valid UTF-8, within the bridge's bound.
func reason(err error) string {
	r := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if len(r) > maxReasonBytes {
		r = r[:maxReasonBytes]
		for !utf8.ValidString(r) { // a rune cut in two
			r = r[:len(r)-1]
		}
	}
	return r
}

// send writes what out carries to the stream, acks that pile up while a write is under way in one
// Ack message, until out is closed or a write fails.
func send(stream pb.EventService_SubscribeClient, out <-chan *pb.SubscribeRequest) error {
	var failed error
	for req := range out {
		if failed != nil {
			continue // drain: handlers must not block
		}
		ack := req.GetAck()
		if ack == nil {
			failed = stream.Send(req)
			continue
		}
		ids := []string{ack.EventId}  // a slice of its own: a message is not changed once sent
		var next *pb.SubscribeRequest // not an ack: sent after the batch
	more:
		for len(ids) < maxAckBatch {
			select {
			case r, ok := <-out:
				if !ok {
					break more
				}
				if a := r.GetAck(); a != nil {
					ids = append(ids, a.EventId)
					continue
				}
				next = r
				break more
			default:
				break more
			}
		}
		failed = stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{EventId: ids[0], MoreEventIds: ids[1:]}}})
		if failed == nil && next != nil {
			failed = stream.Send(next)
		}
	}
	if failed == nil {
		failed = stream.CloseSend()
	}
	return failed
}

// recent is a bounded set of ids, the oldest forgotten first.
type recent struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	ring []string
	next int
}

func newRecent(n int) *recent {
	return &recent{ids: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (r *recent) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.ids[id]; ok {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.ids, old)
	}
	r.ring[r.next] = id
	r.ids[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}

func (r *recent) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.ids[id]
	return ok
}
