package e2e

import (
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// storeRecord writes events to the log as one record, the way the bridge's group commit does when
// callbacks arrive together (server/record.go).
func storeRecord(t *testing.T, b *bridgetest.Bridge, evs ...*pb.Event) {
	t.Helper()
	var payload []byte
	for _, ev := range evs {
		data, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		payload = protowire.AppendBytes(protowire.AppendTag(payload, 1, protowire.BytesType), data)
	}
	msg := &nats.Msg{
		Subject: "imbridge.events.openim.after.member_quit.callbackAfterQuitGroupCommand",
		Data:    payload,
		Header:  nats.Header{"Imbridge-Events": []string{strconv.Itoa(len(evs))}},
	}
	if _, err := b.Log.Publish(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
}

func quitEvent(id, group string) *pb.Event {
	return &pb.Event{Id: id, Source: pb.Source_SOURCE_OPENIM, Command: "callbackAfterQuitGroupCommand", Phase: pb.Phase_PHASE_AFTER,
		Kind: pb.EventKind_EVENT_KIND_MEMBER_QUIT, Payload: &pb.Event_MemberQuit{MemberQuit: &pb.MemberQuit{GroupId: group}}}
}

// TestMultiEventRecord: the events of one record are delivered one by one; a member that leaves
// with some of them unacked hands back only those.
func TestMultiEventRecord(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	storeRecord(t, b, quitEvent("e1", "G1"), quitEvent("e2", "G2"), quitEvent("e3", "G1"))

	first := b.Subscribe(t, &pb.Subscription{Group: "all"})
	seen := map[string]uint64{}
	for range 3 {
		ev := first.Next()
		seen[ev.Id] = ev.Sequence
	}
	if len(seen) != 3 || seen["e1"] != 1 || seen["e2"] != 1 || seen["e3"] != 1 {
		t.Fatalf("events %v; want e1, e2, e3 sharing the record's sequence 1", seen)
	}
	first.Ack("e1")
	first.Ack("e2")
	bridgetest.WaitFor(t, "2 acks taken", func() bool {
		return metricWith(t, b, "imbridge_acks_total", map[string]string{"group": "all"}) == 2
	})
	second := b.Subscribe(t, &pb.Subscription{Group: "all"})
	first.Cancel() // leaves with e3 unacked: the record goes back, e1 and e2 written down as acked
	if ev := second.Next(); ev.Id != "e3" {
		t.Fatalf("redelivered %s; want e3 alone (e1 and e2 were acked)", ev.Id)
	}
	second.Ack("e3")

	// A group whose filter needs the payload decodes the record and takes only its matches.
	g1 := b.Subscribe(t, &pb.Subscription{Group: "g1", Filter: &pb.EventFilter{GroupIds: []string{"G1"}}})
	got := []string{g1.Next().Id, g1.Next().Id}
	if got[0] != "e1" || got[1] != "e3" {
		t.Errorf("filtered group got %v; want [e1 e3]", got)
	}
}

// TestConcurrentCallbacks: under concurrent load (where callbacks share records) every callback
// answered OK reaches the group exactly once when acked.
func TestConcurrentCallbacks(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "all", MaxInFlight: 1000})
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := []byte(`{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G` + strconv.Itoa(i) + `","userID":"u"}`)
			status, out, err := b.Do(http.MethodPost, "/openim/callbackAfterQuitGroupCommand", nil, body)
			if err == nil && status != http.StatusOK {
				err = &statusError{status, string(out)}
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	groups := map[string]bool{}
	for range n {
		ev := sub.Next()
		groups[ev.GetMemberQuit().GetGroupId()] = true
		sub.Ack(ev.Id)
	}
	if len(groups) != n {
		t.Errorf("%d distinct events; want %d", len(groups), n)
	}
}

type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return strconv.Itoa(e.status) + " " + e.body }

// TestRecordRedeliveredToSameMember: when a partly acked record's ack wait passes, the member gets
// only its unacked events again; the acked ones are not started over.
func TestRecordRedeliveredToSameMember(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "slow", AckWait: durationpb.New(300 * time.Millisecond)})
	storeRecord(t, b, quitEvent("e1", "G1"), quitEvent("e2", "G1"), quitEvent("e3", "G1"))
	for _, want := range []string{"e1", "e2", "e3"} {
		if ev := sub.Next(); ev.Id != want {
			t.Fatalf("got %s; want %s", ev.Id, want)
		}
	}
	sub.Ack("e1")
	// Nothing more is acked: after the ack wait the record comes back, without e1.
	for _, want := range []string{"e2", "e3"} {
		if ev := sub.Next(); ev.Id != want {
			t.Fatalf("redelivered %s; want %s (e1 was acked)", ev.Id, want)
		}
	}
	sub.Ack("e2")
	sub.Ack("e3")
}
