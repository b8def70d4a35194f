package server

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// FuzzRecordState: a redelivery entry is read back from a key-value bucket any client with the
// JetStream API can write. Whatever it holds, reading it does not panic, stays within its bounds, and
// what is read is what writing it again would store.
func FuzzRecordState(f *testing.F) {
	for _, st := range []recordState{{}, {Acked: []string{"a", "b"}}, {Acked: []string{"x"}, Reason: "timeout talking to the CRM"}} {
		b, _ := json.Marshal(st)
		f.Add(b)
	}
	f.Add([]byte(`{"acked":[""]}`))
	f.Add([]byte(`{"acked":null,"reason":"\udc00"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseRecordState(b)
		if err != nil {
			return
		}
		if len(st.Acked) > maxStateIDs || len(st.Reason) > maxReasonBytes {
			t.Fatalf("entry out of bounds: %d ids, reason of %d bytes", len(st.Acked), len(st.Reason))
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := parseRecordState(again)
		if err != nil || len(st2.Acked) != len(st.Acked) || st2.Reason != st.Reason {
			t.Fatalf("%+v written again read back as %+v, %v", st, st2, err)
		}
	})
}

// FuzzDeadLetter: a dead letter is read back from a stream any client with the JetStream API can
// write. Whatever its subject, headers and payload, reading it does not panic, and one that reads
// names a group, a valid event and an event subject to redrive it to.
func FuzzDeadLetter(f *testing.F) {
	ev, _ := proto.Marshal(&pb.Event{Id: "e1", Source: pb.Source_SOURCE_OPENIM, Command: "callbackAfterQuitGroupCommand"})
	f.Add("imbridge.dlq.g", "why", "3", "17", "imbridge.events.openim.after.member_quit.callbackAfterQuitGroupCommand", time.Unix(0, 0).UTC().Format(time.RFC3339Nano), ev)
	f.Add("imbridge.dlq.", "", "x", "-1", "imbridge.events.>", "yesterday", []byte{0xff})
	f.Add("imbridge.dlq.g.h", "\xff", "99999999999", "1", "imbridge.events.a..b.c", "", ev)
	f.Fuzz(func(t *testing.T, subject, reason, deliveries, seq, eventSubject, stored string, data []byte) {
		m := &jetstream.RawStreamMsg{Subject: subject, Sequence: 1, Data: data, Time: time.Unix(0, 0), Header: nats.Header{
			deadReasonHeader: {reason}, deadDeliveriesHeader: {deliveries}, deadSeqHeader: {seq},
			deadSubjectHeader: {eventSubject}, deadStoredHeader: {stored},
		}}
		dl, err := parseDeadLetter(m, true)
		if err != nil {
			return
		}
		if validGroupName(dl.Group) != nil || dl.Event == nil || dl.EventId == "" {
			t.Fatalf("dead letter read as %v", dl)
		}
		subj, err := redriveSubject(m)
		if err != nil || !strings.HasPrefix(subj, "imbridge.events.") || strings.ContainsAny(subj, "*> ") {
			t.Fatalf("redrive subject %q, %v", subj, err)
		}
	})
}
