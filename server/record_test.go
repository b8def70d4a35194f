package server

import (
	"bytes"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	events := [][]byte{[]byte("a"), {}, bytes.Repeat([]byte{0xff}, 300)}
	var payload []byte
	for _, e := range events {
		payload = appendRecordEvent(payload, e)
	}
	got, err := recordEvents(nats.Header{recordEventsHeader: []string{"3"}}, payload)
	if err != nil || len(got) != 3 {
		t.Fatalf("recordEvents: %d events, %v; want 3", len(got), err)
	}
	for i := range events {
		if !bytes.Equal(got[i], events[i]) {
			t.Errorf("event %d: %q; want %q", i, got[i], events[i])
		}
	}
	// A message without the header is one plain event.
	if got, err := recordEvents(nil, []byte("plain")); err != nil || len(got) != 1 || string(got[0]) != "plain" {
		t.Errorf("plain message: %q, %v", got, err)
	}
}

func TestRecordErrors(t *testing.T) {
	t.Parallel()
	two := appendRecordEvent(appendRecordEvent(nil, []byte("a")), []byte("b"))
	for _, tt := range []struct {
		name, count string
		payload     []byte
	}{
		{"count too high", "3", two},
		{"count too low", "1", two},
		{"bad count", "x", two},
		{"zero count", "0", nil},
		{"truncated", "2", two[:len(two)-1]},
		{"wrong field", "1", []byte{0x10, 0x01}},
		{"count more than the payload can hold", "99999999999", []byte{0x0a, 0x05, 'x'}},
		{"count over int", "99999999999999999999999", []byte{0x0a, 0x00}},
	} {
		if _, err := recordEvents(nats.Header{recordEventsHeader: []string{tt.count}}, tt.payload); !errors.Is(err, errBadRecord) {
			t.Errorf("%s: %v; want errBadRecord", tt.name, err)
		}
	}
}

// FuzzRecordEvents: whatever a log message holds, decoding it does not panic, and the events it
// yields, encoded again, decode to the same events (the bytes may differ: protobuf allows
// non-minimal varints).
func FuzzRecordEvents(f *testing.F) {
	f.Add("2", appendRecordEvent(appendRecordEvent(nil, []byte("a")), []byte("b")))
	f.Add("1", []byte{0x0a, 0x05, 'x'})
	f.Fuzz(func(t *testing.T, count string, payload []byte) {
		hdr := nats.Header{recordEventsHeader: []string{count}}
		evs, err := recordEvents(hdr, payload)
		if err != nil || count == "" {
			return // no count: a plain message, one event as it is
		}
		var again []byte
		for _, e := range evs {
			again = appendRecordEvent(again, e)
		}
		evs2, err := recordEvents(hdr, again)
		if err != nil || len(evs2) != len(evs) {
			t.Fatalf("payload %x: events re-encoded as %x do not decode (%v)", payload, again, err)
		}
		for i := range evs {
			if !bytes.Equal(evs[i], evs2[i]) {
				t.Errorf("payload %x: event %d is %x, then %x", payload, i, evs[i], evs2[i])
			}
		}
	})
}

// TestEventResponse: a pre-encoded frame decodes to the same SubscribeResponse as encoding it the
// usual way, sequence included.
func TestEventResponse(t *testing.T) {
	t.Parallel()
	ev := &pb.Event{Id: "abc", Command: "callbackAfterQuitGroupCommand", RawBody: []byte(`{"groupID":"G1"}`),
		Payload: &pb.Event_MemberQuit{MemberQuit: &pb.MemberQuit{GroupId: "G1", UserIds: []string{"u"}}}}
	stored, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{0, 1, 1 << 40} {
		frame, err := codec{}.Marshal(eventResponse(stored, seq))
		if err != nil {
			t.Fatal(err)
		}
		var got pb.SubscribeResponse
		if err := proto.Unmarshal(frame.Materialize(), &got); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		want := proto.Clone(ev).(*pb.Event)
		want.Sequence = seq
		if !proto.Equal(got.GetEvent(), want) {
			t.Errorf("seq %d: decoded %v; want %v", seq, got.GetEvent(), want)
		}
	}
}

func TestSubjectExact(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		f    *pb.EventFilter
		want bool
	}{
		{nil, true},
		{&pb.EventFilter{Sources: []pb.Source{pb.Source_SOURCE_OPENIM}, Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_RAW}}, true},
		{&pb.EventFilter{Commands: []string{"callbackAfterQuitGroupCommand"}}, true},
		{&pb.EventFilter{Commands: []string{"Group.CallbackAfterMemberExit"}}, false}, // "." is not in the token
		{&pb.EventFilter{GroupIds: []string{"G1"}}, false},
		{&pb.EventFilter{Commands: []string{"Group_CallbackAfterMemberExit"}}, false}, // shares a token with Group.CallbackAfterMemberExit
	} {
		if got := subjectExact(tt.f); got != tt.want {
			t.Errorf("subjectExact(%v) = %v; want %v", tt.f, got, tt.want)
		}
	}
}
