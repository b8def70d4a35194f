package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/imbridge/imbridge/examples"
	"github.com/imbridge/imbridge/gateway"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

const quitSubject = "imbridge.events.openim.after.member_quit.callbackAfterQuitGroupCommand"

// publishRaw stores a message in the event log as another NATS client would.
func publishRaw(t *testing.T, js jetstream.JetStream, hdr nats.Header, data []byte) {
	t.Helper()
	if _, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: quitSubject, Header: hdr, Data: data}); err != nil {
		t.Fatal(err)
	}
}

func encodeEvent(t *testing.T, ev *pb.Event) []byte {
	t.Helper()
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// natsClient connects to a NATS server as a client of its own, closed when the test ends.
func natsClient(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// waitMessages returns the next n messages of a NATS subscription.
func waitMessages(t *testing.T, sub *nats.Subscription, n int) []*nats.Msg {
	t.Helper()
	var out []*nats.Msg
	for range n {
		msg, err := sub.NextMsg(bridgetest.Timeout)
		if err != nil {
			t.Fatalf("waiting for message %d of %d on %s: %v", len(out)+1, n, sub.Subject, err)
		}
		out = append(out, msg)
	}
	return out
}

// TestUnreadableLogMessages: a NATS client that may publish on imbridge.events.> stores messages that
// are no bridge's records between two callbacks. No bridge falls over (before the fix, the count
// header made every bridge with a group member run out of memory, again at each restart); every
// subscriber gets the good events in order, with the one readable event of a damaged record; each
// group terminates the unreadable messages, so they are not delivered again, and counts them.
func TestUnreadableLogMessages(t *testing.T) {
	t.Parallel()
	url := bridgetest.ExternalNATS(t)
	b := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	nc, js := natsClient(t, url)
	terminated, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.IMBRIDGE_EVENTS.*")
	if err != nil {
		t.Fatal(err)
	}

	subs := map[string]*bridgetest.Sub{
		"group, events sent as stored": b.Subscribe(t, &pb.Subscription{Group: "exact"}),
		"group, events decoded":        b.Subscribe(t, &pb.Subscription{Group: "decoded", Filter: &pb.EventFilter{GroupIds: []string{"G1", "G2", "G3"}}}),
		"live tail":                    b.Subscribe(t, &pb.Subscription{}),
	}
	postQuit(t, b, "G1")
	// The reproduction: a 3-byte message claiming 99,999,999,999 events.
	publishRaw(t, js, nats.Header{"Imbridge-Events": {"99999999999"}}, []byte{0x0a, 0x05, 0x78})
	publishRaw(t, js, nil, []byte("not an event"))
	// A record whose first event has invalid UTF-8 in its command and whose second is fine.
	bad := encodeEvent(t, quitEvent("bad", "G3"))
	bad = protowire.AppendBytes(protowire.AppendTag(bad, 5, protowire.BytesType), []byte{0xff})
	good := encodeEvent(t, quitEvent("forged-G3", "G3"))
	var record []byte
	for _, ev := range [][]byte{bad, good} {
		record = protowire.AppendBytes(protowire.AppendTag(record, 1, protowire.BytesType), ev)
	}
	publishRaw(t, js, nats.Header{"Imbridge-Events": {"2"}}, record)
	postQuit(t, b, "G2")

	for name, sub := range subs {
		var got []string
		for range 3 {
			ev := sub.Next()
			got = append(got, ev.GetMemberQuit().GetGroupId())
			if name != "live tail" {
				sub.Ack(ev.Id)
			}
		}
		if strings.Join(got, ",") != "G1,G3,G2" {
			t.Errorf("%s got %v; want G1, G3, G2", name, got)
		}
	}
	// Each group terminated the two messages that are not records, with a reason.
	byGroup := map[string]int{}
	for _, msg := range waitMessages(t, terminated, 4) {
		var adv struct {
			Consumer string `json:"consumer"`
			Reason   string `json:"reason"`
		}
		if err := json.Unmarshal(msg.Data, &adv); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(adv.Reason, "unreadable") {
			t.Errorf("termination reason %q; want it to say the record is unreadable", adv.Reason)
		}
		byGroup[adv.Consumer]++
	}
	if byGroup["exact"] != 2 || byGroup["decoded"] != 2 {
		t.Errorf("terminated by group %v; want 2 each for exact and decoded", byGroup)
	}
	// Two groups and the tail each saw one message that is not a record (the count header) and two
	// unreadable events (a message without the header is a record of one event).
	if got := rejected(t, b, "record"); got != 3 {
		t.Errorf("imbridge_nats_rejected_total{reason=record} = %v; want 3", got)
	}
	if got := rejected(t, b, "event"); got != 6 {
		t.Errorf("imbridge_nats_rejected_total{reason=event} = %v; want 6", got)
	}

	// A bridge started later (a restart, another instance) reads past them too: a new group gets
	// every good event from the start of the log, then the next callback.
	b.Close()
	b2 := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	late := b2.Subscribe(t, &pb.Subscription{Group: "late"})
	postQuit(t, b2, "G4")
	var got []string
	for range 4 {
		ev := late.Next()
		got = append(got, ev.GetMemberQuit().GetGroupId())
		late.Ack(ev.Id)
	}
	if strings.Join(got, ",") != "G1,G3,G2,G4" {
		t.Errorf("new group after a restart got %v; want G1, G3, G2, G4", got)
	}
}

// rejected reads imbridge_nats_rejected_total{reason} from a bridge's metrics.
func rejected(t *testing.T, b *bridgetest.Bridge, reason string) float64 {
	t.Helper()
	families, err := b.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "imbridge_nats_rejected_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no imbridge_nats_rejected_total{reason=%q}", reason)
	return 0
}

// TestForgedVerdictSubject: a stored event names where its verdict goes. One that names anything but
// a bridge's verdict subject gets no verdict published there: before the fix, whoever could write to
// the log could have the bridge publish wherever the bridge may, here into its own event log.
func TestForgedVerdictSubject(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	dec := b.Subscribe(t, &pb.Subscription{Group: "mod", Decide: true})
	forged := quitEvent("forged", "G1")
	forged.Phase = pb.Phase_PHASE_BEFORE
	if _, err := b.Log.Publish(t.Context(), &nats.Msg{
		Subject: "imbridge.events.openim.before.raw.callbackBeforeCreateGroupCommand",
		Header:  nats.Header{"Imbridge-Verdict-To": {"imbridge.events.openim.after.raw.injected"}},
		Data:    encodeEvent(t, forged),
	}); err != nil {
		t.Fatal(err)
	}
	ev := dec.Next()
	if ev.Id != "forged" {
		t.Fatalf("decider got %s; want the forged event", ev.Id)
	}
	stored := streamMsgs(t, b)
	dec.Decide(ev.Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE})

	// A real before-callback after it: once it is answered, the forged verdict was handled (a
	// member handles its subscriber's messages in order).
	ch := postAsync(t, b, beforeEx, examples.Must("openim-before-set-group-info-ex").Body)
	real := dec.Next()
	dec.Decide(real.Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "decided"})
	if a := waitAnswer(t, ch); !strings.Contains(a.body, `"errMsg":"decided"`) {
		t.Errorf("real callback answered %s; want the decider's refusal", a.body)
	}
	if now := streamMsgs(t, b); now != stored+1 {
		t.Errorf("log holds %d messages; want %d: the real callback's, and nothing published for the forged one", now, stored+1)
	}
	if got := rejected(t, b, "verdict_to"); got != 1 {
		t.Errorf("imbridge_nats_rejected_total{reason=verdict_to} = %v; want 1", got)
	}
}

// bodyOfSize is an OpenIM callback body of exactly n bytes.
func bodyOfSize(t *testing.T, n int) []byte {
	t.Helper()
	head := `{"callbackCommand":"callbackAfterSendGroupMsgCommand","groupID":"G1","content":"`
	if n < len(head)+2 {
		t.Fatalf("body of %d bytes is too small", n)
	}
	return []byte(head + strings.Repeat("x", n-len(head)-2) + `"}`)
}

// TestBodyLimits: the largest body the bridge accepts is stored and reaches a subscriber byte for
// byte; a larger one, and one whose event would not fit in the log, get 413 in the vendor's format
// and nothing is stored.
func TestBodyLimits(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	tail := b.Subscribe(t, &pb.Subscription{})
	// A group member that holds an event unacked takes the largest one too.
	member := b.Subscribe(t, &pb.Subscription{Group: "big"})
	const path = "/openim/callbackAfterSendGroupMsgCommand"

	postQuit(t, b, "G1") // a small event first: the member holds it, unacked, when the big one comes
	for _, s := range []*bridgetest.Sub{tail, member} {
		s.Next()
	}
	largest := bodyOfSize(t, gateway.DefaultMaxBodyBytes)
	if status, out := b.Post(t, http.MethodPost, path, nil, largest); status != http.StatusOK {
		t.Fatalf("largest body: %d %.300s; want 200", status, out)
	}
	for name, s := range map[string]*bridgetest.Sub{"tail": tail, "group member": member} {
		if ev := s.Next(); !bytes.Equal(ev.RawBody, largest) {
			t.Errorf("%s: stored body of %d bytes differs from the %d bytes posted", name, len(ev.RawBody), len(largest))
		}
	}
	stored := streamMsgs(t, b)

	status, out := b.Post(t, http.MethodPost, path, nil, bodyOfSize(t, gateway.DefaultMaxBodyBytes+1))
	assertOpenIMError(t, status, out, http.StatusRequestEntityTooLarge)
	status, out = b.Post(t, http.MethodPost, "/tencent?CallbackCommand=Group.CallbackAfterGroupDestroyed", nil, bodyOfSize(t, gateway.DefaultMaxBodyBytes+1))
	assertTencentError(t, status, out, http.StatusRequestEntityTooLarge)

	// Under the body limit, but each invalid byte in a decoded string becomes the 3-byte U+FFFD:
	// the event would take about 4 MiB.
	head := `{"groupID":"G1","groupName":"`
	expanding := append(append([]byte(head), bytes.Repeat([]byte{0xff}, gateway.DefaultMaxBodyBytes-len(head)-2)...), '"', '}')
	status, out = b.Post(t, http.MethodPost, "/openim/callbackAfterSetGroupInfoExCommand", nil, expanding)
	assertOpenIMError(t, status, out, http.StatusRequestEntityTooLarge)
	if !strings.Contains(string(out), "too large to store") {
		t.Errorf("413 answer %s; want it to say the callback is too large to store", out)
	}
	if now := streamMsgs(t, b); now != stored {
		t.Errorf("log holds %d messages after the refused callbacks; want %d", now, stored)
	}
}

func streamMsgs(t *testing.T, b *bridgetest.Bridge) uint64 {
	t.Helper()
	s, err := b.Log.JetStream().Stream(t.Context(), b.Log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestCommandNames: a command name cannot be a NATS subject's undoing. Before the fix, one POST to
// /openim/ with a 5,000-byte name made the bridge's subject overrun NATS's control line: the server
// closed the connection and every later callback was answered 503.
func TestCommandNames(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	long := "callbackAfter" + strings.Repeat("x", 5000)
	status, out := b.Post(t, http.MethodPost, "/openim/"+long, nil, []byte(`{}`))
	assertOpenIMError(t, status, out, http.StatusBadRequest)
	status, out = b.Post(t, http.MethodPost, "/tencent?CallbackCommand=Group."+long, nil, []byte(`{}`))
	assertTencentError(t, status, out, http.StatusBadRequest)
	status, out = b.Post(t, http.MethodPost, "/openim/callbackAfter%2A", nil, []byte(`{}`))
	assertOpenIMError(t, status, out, http.StatusBadRequest)
	if _, err := b.OpenIM.Callback(t.Context(), &pb.OpenIMCallbackRequest{Command: long}); err == nil {
		t.Error("long command over gRPC: accepted; want InvalidArgument")
	}
	postQuit(t, b, "G1") // the log still takes callbacks
}

// TestLogUnavailableAnswer: an IM server is told the callback was not stored, not how NATS failed.
func TestLogUnavailableAnswer(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	if err := b.Log.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	status, out := b.Post(t, http.MethodPost, "/openim/callbackAfterQuitGroupCommand", nil, []byte(`{"groupID":"G1","userID":"u"}`))
	assertOpenIMError(t, status, out, http.StatusServiceUnavailable)
	for _, internal := range []string{"imbridge.events", "nats", "publish"} {
		if strings.Contains(string(out), internal) {
			t.Errorf("answer %s names %q; want no internals", out, internal)
		}
	}
}

// TestFieldTypes: a number where a string is expected is taken as its text; a boolean, an object (but
// OpenIM's documented {"value": x}) or an array is 400 naming the field and what was wrong. Before,
// {"GroupId":true} was stored as "true" and {"groupID":{"a":1}} was "missing field groupID".
func TestFieldTypes(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	tail := b.Subscribe(t, &pb.Subscription{})
	if status, out := b.Post(t, http.MethodPost, "/openim/callbackAfterQuitGroupCommand", nil, []byte(`{"groupID":5,"userID":"u"}`)); status != http.StatusOK {
		t.Fatalf("number for groupID: %d %s; want 200", status, out)
	}
	if ev := tail.Next(); ev.GetMemberQuit().GetGroupId() != "5" {
		t.Errorf("group id %q; want \"5\"", ev.GetMemberQuit().GetGroupId())
	}
	for _, tt := range []struct {
		path, body, want string
	}{
		{"/openim/callbackAfterQuitGroupCommand", `{"groupID":true}`, "groupID: want string, got bool"},
		{"/openim/callbackAfterQuitGroupCommand", `{"groupID":{"a":1}}`, `groupID: want string, got an object without \"value\"`},
		{"/openim/callbackAfterKickGroupCommand", `{"groupID":"G1","kickedUserIDs":"u1"}`, "kickedUserIDs: want array, got string"},
		{"/tencent?CallbackCommand=Group.CallbackAfterMemberExit", `{"GroupId":true}`, "GroupId: want string, got bool"},
	} {
		status, out := b.Post(t, http.MethodPost, tt.path, nil, []byte(tt.body))
		if strings.HasPrefix(tt.path, "/tencent") {
			assertTencentError(t, status, out, http.StatusBadRequest)
		} else {
			assertOpenIMError(t, status, out, http.StatusBadRequest)
		}
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("%s %s: answer %s; want it to say %q", tt.path, tt.body, out, tt.want)
		}
	}
}
