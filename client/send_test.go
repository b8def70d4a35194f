package client

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc"

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
