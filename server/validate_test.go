package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imbridge/imbridge/examples"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// storedEvents are events as the bridge stores them, from the example callbacks.
func storedEvents(tb testing.TB) [][]byte {
	tb.Helper()
	name := "new"
	var out [][]byte
	for _, n := range examples.Names() {
		ex := examples.Must(n)
		ev := &pb.Event{Id: "v2UQ7tnCOHkskC8pIL8xbl", Sequence: 7, Command: ex.Command, Source: pb.Source_SOURCE_OPENIM,
			Phase: pb.Phase_PHASE_AFTER, Kind: pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED, RawBody: ex.Body,
			ReceivedTime: timestamppb.Now(), DecideBy: timestamppb.Now(),
			Metadata: &pb.RequestMetadata{OperationId: "op1", RemoteAddr: "127.0.0.1:3456"},
			Payload: &pb.Event_GroupInfoChanged{GroupInfoChanged: &pb.GroupInfoChanged{GroupId: "G001", Name: &name,
				UserDefinedData: []*pb.KeyValue{{Key: "k", Value: "v"}}}}}
		b, err := proto.Marshal(ev)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// unmarshalsToDeliver is checkEvent's specification: protobuf-go decodes the bytes as an Event that
// is deliverable.
func unmarshalsToDeliver(b []byte) (string, bool) {
	var ev pb.Event
	if proto.Unmarshal(b, &ev) != nil || !deliverable(&ev) {
		return "", false
	}
	return ev.Id, true
}

func TestCheckEvent(t *testing.T) {
	t.Parallel()
	good := storedEvents(t)[0]
	field := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	badTime := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(maxTimestampSeconds+1))
	okTime := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
	badNanos := protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 1e9)
	for _, tt := range []struct {
		name   string
		b      []byte
		wantID string
	}{
		{"stored event", good, "v2UQ7tnCOHkskC8pIL8xbl"},
		{"unknown fields", append(append([]byte{}, good...), field(99, []byte{0xff})...), "v2UQ7tnCOHkskC8pIL8xbl"},
		{"id sent twice: the last wins", append(append([]byte{}, good...), field(1, []byte("second"))...), "second"},
		{"no id", field(5, []byte("callbackAfterQuitGroupCommand")), ""},
		{"empty", nil, ""},
		{"truncated", good[:len(good)-1], ""},
		{"invalid UTF-8 in command", append(append([]byte{}, good...), field(5, []byte{0xff})...), ""},
		{"invalid UTF-8 deep in the payload", append(append([]byte{}, good...), field(20, field(12, field(2, []byte{0xc0})))...), ""},
		{"timestamp out of range", append(append([]byte{}, good...), field(3, badTime)...), ""},
		{"timestamp out of range, then in range: decoders merge them", append(append(append([]byte{}, good...), field(3, badTime)...), field(3, okTime)...), "v2UQ7tnCOHkskC8pIL8xbl"},
		{"timestamp in range, then nanos out of range", append(append([]byte{}, good...), field(10, badNanos)...), ""},
		{"wrong wire type on a known field is unknown", append(append([]byte{}, good...), 0x2d, 1, 2, 3, 4), "v2UQ7tnCOHkskC8pIL8xbl"},
		{"field number zero", []byte{0x02, 0x00}, ""},
		{"not protobuf at all", []byte("{\"id\":\"x\"}"), ""},
	} {
		id, ok := checkEvent(tt.b)
		if id != tt.wantID || ok != (tt.wantID != "") {
			t.Errorf("%s: checkEvent = %q, %v; want %q", tt.name, id, ok, tt.wantID)
		}
		if sid, sok := unmarshalsToDeliver(tt.b); sid != id || sok != ok {
			t.Errorf("%s: checkEvent = %q, %v; decoding says %q, %v", tt.name, id, ok, sid, sok)
		}
	}
}

// FuzzCheckEvent: checkEvent accepts exactly the bytes a subscriber can decode and print, and reads
// the id the subscriber reads.
func FuzzCheckEvent(f *testing.F) {
	for _, b := range storedEvents(f) {
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x01, 'x', 0x1a, 0x02, 0x08, 0x01})
	traced, _ := proto.Marshal(&pb.Event{Id: "t", TraceContext: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "k=v"}})
	f.Add(traced)
	f.Fuzz(func(t *testing.T, b []byte) {
		id, ok := checkEvent(b)
		wantID, wantOK := unmarshalsToDeliver(b)
		if id != wantID || ok != wantOK {
			t.Fatalf("%x: checkEvent = %q, %v; decoding says %q, %v", b, id, ok, wantID, wantOK)
		}
		if !ok {
			return
		}
		// An event sent as stored: its trace context, read without decoding, is the decoder's.
		ev := new(pb.Event)
		if err := proto.Unmarshal(b, ev); err != nil {
			t.Fatal(err)
		}
		if got := eventTraceContext(b); !maps.Equal(got, ev.TraceContext) {
			t.Fatalf("%x: eventTraceContext = %v; decoding says %v", b, got, ev.TraceContext)
		}
	})
}

func TestVerdictSubjectOf(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		to, id string
		want   bool
	}{
		{"imbridge.verdicts.Zq3Yq7ln8Rj2.ev1", "ev1", true},
		{"imbridge.verdicts.Zq3Yq7ln8Rj2.ev2", "ev1", false},
		{"imbridge.verdicts..ev1", "ev1", false},
		{"imbridge.verdicts.a.b.ev1", "ev1", false},
		{"imbridge.verdicts.*.ev1", "ev1", false},
		{"imbridge.verdicts.>", "", false},
		{"$JS.API.STREAM.DELETE.IMBRIDGE_EVENTS", "ev1", false},
		{"imbridge.events.openim.after.raw.x", "x", false},
		{"imbridge.verdicts.i.ev.1", "ev.1", false},
	} {
		if got := verdictSubjectOf(tt.to, tt.id); got != tt.want {
			t.Errorf("verdictSubjectOf(%q, %q) = %v; want %v", tt.to, tt.id, got, tt.want)
		}
	}
}

func TestCheckCommand(t *testing.T) {
	t.Parallel()
	long := make([]byte, MaxCommandBytes+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, tt := range []struct {
		cmd  string
		want bool
	}{
		{"callbackAfterQuitGroupCommand", true},
		{"Group.CallbackAfterMemberExit", true},
		{"x-y_z", true},
		{string(long[:MaxCommandBytes]), true},
		{string(long), false},
		{"a b", false},
		{"a*", false},
		{"a>", false},
		{"caf\u00e9", false},
	} {
		if err := checkCommand(tt.cmd); (err == nil) != tt.want {
			t.Errorf("checkCommand(%.20q) = %v; want ok %v", tt.cmd, err, tt.want)
		}
	}
}

// FuzzGroupSettings: a group's settings are read back from its consumer's metadata and ack wait,
// which any client with the JetStream API can write. Whatever they hold, reading them does not
// panic, and what is read is what a member asking for those settings would store.
func FuzzGroupSettings(f *testing.F) {
	for _, sub := range []*pb.Subscription{
		{Group: "g"},
		{Group: "d", Decide: true, Filter: &pb.EventFilter{Commands: []string{"callbackBeforeSetGroupInfoExCommand"}, GroupIds: []string{"G1"}}},
		{Group: "o", Order: pb.Order_ORDER_IM_GROUP, MaxDeliveries: 3, AckWait: durationpb.New(time.Second)},
	} {
		cfg := groupConfig(sub, DefaultFailoverWait)
		f.Add(cfg.Metadata[metaFilter], cfg.Metadata[metaDecide], cfg.Metadata[metaMaxDeliveries], cfg.Metadata[metaOrder], cfg.Metadata[metaAckWait], int64(cfg.AckWait))
	}
	f.Add("////", "true", "-1", "im_group ", "-5s", int64(-1))
	f.Add("", "false", "99999999999999999999", "", "", int64(time.Minute))
	f.Fuzz(func(t *testing.T, filter, decide, maxDeliveries, order, ackWait string, logAckWait int64) {
		md := map[string]string{metaFilter: filter, metaDecide: decide, metaMaxDeliveries: maxDeliveries}
		if order != "" {
			md[metaOrder] = order
		}
		if ackWait != "" {
			md[metaAckWait] = ackWait
		}
		have, err := settingsOf(jetstream.ConsumerConfig{Metadata: md, AckWait: time.Duration(logAckWait)})
		if err != nil {
			return
		}
		if have.MaxDeliveries < 1 || have.MaxDeliveries > MaxDeliveries {
			t.Fatalf("max_deliveries %d read back from %q", have.MaxDeliveries, maxDeliveries)
		}
		if ackWait != "" && have.AckWait.AsDuration() < max(MinAckWait, time.Duration(logAckWait)) {
			t.Fatalf("ack_wait %v read back from %q (log's %v)", have.AckWait.AsDuration(), ackWait, time.Duration(logAckWait))
		}
		stored := groupConfig(&pb.Subscription{Group: "g", Filter: have.Filter, Decide: have.Decide, MaxDeliveries: have.MaxDeliveries, Order: have.Order, AckWait: have.AckWait}, DefaultFailoverWait)
		again, err := settingsOf(stored)
		if err != nil || !sameSettings(again, have) || again.Order != have.Order {
			t.Fatalf("settings %v stored again read back as %v, %v", have, again, err)
		}
		if stored.AckWait > DefaultFailoverWait {
			t.Fatalf("log ack wait %v; want at most the failover wait", stored.AckWait)
		}
	})
}

func TestOrderKey(t *testing.T) {
	raw := func(body string) *pb.Event {
		return &pb.Event{Kind: pb.EventKind_EVENT_KIND_RAW, RawBody: []byte(body)}
	}
	for _, tc := range []struct {
		ev   *pb.Event
		want string
	}{
		{&pb.Event{Kind: pb.EventKind_EVENT_KIND_MEMBER_QUIT, Payload: &pb.Event_MemberQuit{MemberQuit: &pb.MemberQuit{GroupId: "q1"}}}, "q1"},
		{&pb.Event{Kind: pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED, Payload: &pb.Event_GroupInfoChanged{GroupInfoChanged: &pb.GroupInfoChanged{GroupId: "c1"}}}, "c1"},
		{raw(`{"callbackCommand":"callbackAfterJoinGroupCommand","groupID":"o1","userID":"u"}`), "o1"}, // OpenIM
		{raw(`{"CallbackCommand":"Group.CallbackAfterNewMemberJoin","GroupId":"@TGS#t1"}`), "@TGS#t1"}, // Tencent
		{raw(`{"userID":"u"}`), ""},
		{raw(`{"groupID":42}`), ""},
		{raw(`not json`), ""},
		{&pb.Event{Kind: pb.EventKind_EVENT_KIND_MEMBER_QUIT, RawBody: []byte(`{"groupID":"x"}`)}, ""}, // typed, without its payload
	} {
		if got := orderKey(tc.ev); got != tc.want {
			t.Errorf("orderKey(%s %s) = %q; want %q", tc.ev.Kind, tc.ev.RawBody, got, tc.want)
		}
	}
}

// FuzzOrderKey: an ordered group's reader reads the IM group from raw bodies, outside input: it
// never panics, and a key it finds is the string value of a top-level groupID / GroupId member of
// the body, as a generic decoding reads it.
func FuzzOrderKey(f *testing.F) {
	f.Add([]byte(`{"groupID":"g1"}`))
	f.Add([]byte(`{"GroupId":"@TGS#1","GroupID":"other"}`))
	f.Add([]byte(`{"groupID":null}`))
	f.Add([]byte(`{"groupID":"\u00e9\ud800"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		key := orderKey(&pb.Event{Kind: pb.EventKind_EVENT_KIND_RAW, RawBody: body})
		if key == "" {
			return
		}
		var generic map[string]any
		if err := json.Unmarshal(body, &generic); err != nil {
			t.Fatalf("key %q from a body that is no JSON object: %v", key, err)
		}
		for name, v := range generic {
			if strings.EqualFold(name, "groupID") && v == key {
				return
			}
		}
		t.Fatalf("key %q is no groupID of %s", key, body)
	})
}

// TestPulledMessageNotFromTheLog: a message on a member's pull subscription whose reply subject is no
// JetStream ack subject is neither delivered nor answered, whether it arrives while the member
// handles records, while it is leaving, or as it hands records back: a forged one would otherwise
// have its reply subject (here, the event log) answered with the bridge's permissions.
func TestPulledMessageNotFromTheLog(t *testing.T) {
	t.Parallel()
	log := openLog(t)
	nc := log.Conn()
	const target = "imbridge.events.openim.after.raw.injected"
	watch, err := nc.SubscribeSync(target)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := nc.SubscribeSync(nc.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	mets, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{
		s:   &Server{metrics: mets, logger: slog.New(slog.DiscardHandler)},
		sub: &pb.Subscription{Group: "g"}, pending: map[string]*record{}, records: map[uint64]*record{},
	}
	forged := func() *nats.Msg {
		if err := nc.PublishMsg(&nats.Msg{Subject: inbox.Subject, Reply: target, Data: storedEvents(t)[0]}); err != nil {
			t.Fatal(err)
		}
		msg, err := inbox.NextMsg(time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return msg // bound to a subscription, as a pulled message is
	}
	if err := m.handle(t.Context(), forged()); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := m.handle(cancelled, forged()); err != nil {
		t.Fatal(err)
	}
	nak(forged())
	handBack(func() chan *nats.Msg { ch := make(chan *nats.Msg, 1); ch <- forged(); return ch }())

	if len(m.pending) != 0 {
		t.Errorf("member holds %d events; want none", len(m.pending))
	}
	if got := testutil.ToFloat64(mets.rejected.WithLabelValues(rejectRecord)); got != 1 {
		t.Errorf("rejected{record} = %v; want 1", got)
	}
	// Whatever the bridge published on the target came before this marker (one connection).
	if err := nc.Publish(target, []byte("marker")); err != nil {
		t.Fatal(err)
	}
	if msg, err := watch.NextMsg(time.Minute); err != nil || string(msg.Data) != "marker" {
		t.Errorf("first message on %s: %v, %v; want the marker, nothing answered to a forged reply subject", target, msg, err)
	}
}
