package client

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// fakeStream records what is sent.
type fakeStream struct {
	grpc.ClientStream
	sent   []*pb.SubscribeRequest
	closed bool
}

func (f *fakeStream) Send(r *pb.SubscribeRequest) error { f.sent = append(f.sent, r); return nil }
func (f *fakeStream) Recv() (*pb.SubscribeResponse, error) {
	return nil, errors.New("not used")
}
func (f *fakeStream) CloseSend() error         { f.closed = true; return nil }
func (f *fakeStream) Context() context.Context { return context.Background() }

// TestAcksBatched: acks queued while a send is under way go out as one Ack, a verdict between them
// keeps its place after the acks before it.
func TestAcksBatched(t *testing.T) {
	out := make(chan *pb.SubscribeRequest, 400)
	for i := range 300 {
		out <- ackOf(string(rune('a'+i%26)) + strings.Repeat("x", i/26))
	}
	out <- &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Verdict{Verdict: &pb.VerdictReply{EventId: "v"}}}
	out <- ackOf("last")
	close(out)
	f := &fakeStream{}
	if err := send(f, out); err != nil {
		t.Fatal(err)
	}
	var shape []string
	for _, r := range f.sent {
		switch {
		case r.GetAck() != nil:
			shape = append(shape, "ack×"+strconv.Itoa(1+len(r.GetAck().GetMoreEventIds())))
		case r.GetVerdict() != nil:
			shape = append(shape, "verdict")
		}
	}
	if got, want := strings.Join(shape, " "), "ack×256 ack×44 verdict ack×1"; got != want || !f.closed {
		t.Errorf("sent %s (closed %v); want %s, then the stream closed", got, f.closed, want)
	}
}

// TestTailResumes: a live tail subscribes again at the sequence of the last event it saw, and skips
// the events of that record it had.
func TestTailResumes(t *testing.T) {
	s := &session{h: HandlerFunc(nil)}
	for _, ev := range []*pb.Event{{Id: "a", Sequence: 5}, {Id: "b", Sequence: 5}, {Id: "c", Sequence: 7}} {
		if !s.fresh(ev) {
			t.Fatalf("%s at %d: not fresh", ev.Id, ev.Sequence)
		}
	}
	if r := s.request(); r.StartSequence != 7 {
		t.Fatalf("resubscribes at %d; want 7", r.StartSequence)
	}
	for _, tc := range []struct {
		ev    *pb.Event
		fresh bool
	}{{&pb.Event{Id: "b", Sequence: 5}, false}, {&pb.Event{Id: "c", Sequence: 7}, false}, {&pb.Event{Id: "d", Sequence: 7}, true}, {&pb.Event{Id: "e", Sequence: 9}, true}} {
		if got := s.fresh(tc.ev); got != tc.fresh {
			t.Errorf("%s at %d: fresh %v; want %v", tc.ev.Id, tc.ev.Sequence, got, tc.fresh)
		}
	}
}

// TestReason: a nack's reason is valid UTF-8 within the bridge's bound, whatever the error says.
func TestReason(t *testing.T) {
	for _, msg := range []string{"plain", strings.Repeat("é", 1000), "bad \xff bytes", strings.Repeat("x", 1023) + "€"} {
		r := reason(errors.New(msg))
		if len(r) > maxReasonBytes || !utf8Valid(r) || r == "" {
			t.Errorf("reason of %.20q: %d bytes, valid %v", msg, len(r), utf8Valid(r))
		}
	}
}

func utf8Valid(s string) bool { return utf8.ValidString(s) }

// handled runs session.handle on ev with h and returns what it queued.
func handled(t *testing.T, group string, h Handler, ev *pb.Event) (*pb.SubscribeRequest, *session) {
	t.Helper()
	s := &session{c: &Client{}, sub: Subscription{Group: group}, h: h, done: newRecent(8)}
	out := make(chan *pb.SubscribeRequest, 1)
	s.handle(context.Background(), context.Background(), ev, out)
	select {
	case r := <-out:
		return r, s
	default:
		return nil, s
	}
}

// TestLateDecision: a before-callback that reaches the decider past its decide_by is not handed
// to it: nacked to come back once the bridge has surely answered, acked from then on (an ack
// before would count as an allow); one whose handler failed past it is nacked to come back then.
func TestLateDecision(t *testing.T) {
	called := false
	decider := DeciderFunc(func(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
		called = true
		return Allow(), nil
	})
	r, _ := handled(t, "d", decider, &pb.Event{Id: "late", Phase: pb.Phase_PHASE_BEFORE, DecideBy: timestamppb.New(time.Now().Add(-time.Second))})
	if d := r.GetNack().GetDelay().AsDuration(); called || r.GetNack().GetEventId() != "late" || d <= 0 || d > lateMargin {
		t.Errorf("event 1 s late: handler called %v, sent %v; want a nack delayed to 2 s past its deadline", called, r)
	}
	r, _ = handled(t, "d", decider, &pb.Event{Id: "later", Phase: pb.Phase_PHASE_BEFORE, DecideBy: timestamppb.New(time.Now().Add(-lateMargin - time.Second))})
	if called || r.GetAck().GetEventId() != "later" {
		t.Errorf("event long past its deadline: handler called %v, sent %v; want an ack without a call", called, r)
	}
	r, _ = handled(t, "d", DeciderFunc(func(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}), &pb.Event{Id: "slow", Phase: pb.Phase_PHASE_BEFORE, DecideBy: timestamppb.New(time.Now().Add(20 * time.Millisecond))})
	if d := r.GetNack().GetDelay().AsDuration(); r.GetNack().GetEventId() != "slow" || d < lateMargin/2 || d > lateMargin {
		t.Errorf("handler failed at its deadline: sent %v; want a nack delayed until the bridge surely answered", r)
	}
}

// TestVerdictNotRemembered: a verdict sent is not remembered as done, so that a verdict lost with
// the stream is decided again rather than acked (an ack allows); its text is made valid UTF-8.
func TestVerdictNotRemembered(t *testing.T) {
	r, s := handled(t, "d", DeciderFunc(func(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
		return Refuse(1, "bad \xff name"), nil
	}), &pb.Event{Id: "e", Phase: pb.Phase_PHASE_BEFORE, DecideBy: timestamppb.New(time.Now().Add(time.Minute))})
	v := r.GetVerdict()
	if v.GetEventId() != "e" || v.GetVerdict().GetDecision() != pb.Decision_DECISION_REFUSE || !utf8.ValidString(v.GetVerdict().GetMessage()) {
		t.Fatalf("sent %v; want the refusal, in valid UTF-8", r)
	}
	if s.done.has("e") {
		t.Error("the decided event is remembered as done: coming again, it would be acked")
	}
}

// TestRetryAfterAndPanic: RetryAfter puts its delay on the nack; a panic nacks at once.
func TestRetryAfterAndPanic(t *testing.T) {
	r, _ := handled(t, "g", HandlerFunc(func(context.Context, *pb.Event) error {
		return RetryAfter(errors.New("database down"), 2*time.Second)
	}), &pb.Event{Id: "e"})
	if n := r.GetNack(); n.GetReason() != "database down" || n.GetDelay().AsDuration() != 2*time.Second {
		t.Errorf("sent %v; want a nack with reason and a 2s delay", r)
	}
	r, s := handled(t, "g", HandlerFunc(func(context.Context, *pb.Event) error { panic("oops") }), &pb.Event{Id: "p"})
	if n := r.GetNack(); !strings.Contains(n.GetReason(), "panicked: oops") || n.GetDelay() != nil || s.done.has("p") {
		t.Errorf("sent %v; want a nack saying the handler panicked", r)
	}
}

// TestBackoff: waits double from the first to the most, jittered into their upper half, and do not
// overflow.
func TestBackoff(t *testing.T) {
	c := &Client{opts: options{minWait: 100 * time.Millisecond, maxWait: time.Second}}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 1000: time.Second} {
		if d := c.backoff(n); d < want/2 || d > want {
			t.Errorf("backoff(%d) = %v; want %v to %v", n, d, want/2, want)
		}
	}
	c.opts = options{minWait: time.Millisecond, maxWait: math.MaxInt64}
	if d := c.backoff(200); d <= 0 {
		t.Errorf("backoff(200) with no most = %v", d)
	}
}
