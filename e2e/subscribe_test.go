package e2e

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/imbridge/imbridge/examples"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

func postQuit(t *testing.T, b *bridgetest.Bridge, group string) {
	t.Helper()
	body := []byte(`{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"` + group + `","userID":"u"}`)
	if status, out := b.Post(t, http.MethodPost, "/openim/callbackAfterQuitGroupCommand", nil, body); status != http.StatusOK {
		t.Fatalf("post: %d %s", status, out)
	}
}

// TestGroupGetsEventsStoredBeforeItConnected: an event answered "OK" while nobody listened reaches a
// group member that connects later.
func TestGroupGetsEventsStoredBeforeItConnected(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	postQuit(t, b, "G1")
	sub := b.Subscribe(t, &pb.Subscription{Group: "late"})
	if ev := sub.Next(); ev.GetMemberQuit().GetGroupId() != "G1" {
		t.Errorf("event %v; want the quit from G1", ev)
	}
}

// TestGroupsEachGetEveryEvent and members of one group share them.
func TestGroupsAndMembers(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	a1 := b.Subscribe(t, &pb.Subscription{Group: "a", MaxInFlight: 1})
	a2 := b.Subscribe(t, &pb.Subscription{Group: "a", MaxInFlight: 1})
	other := b.Subscribe(t, &pb.Subscription{Group: "b"})
	postQuit(t, b, "G1")
	postQuit(t, b, "G2")
	// With one event in flight each, the two members of "a" hold one event each.
	e1, e2 := a1.Next(), a2.Next()
	if e1.Id == e2.Id {
		t.Errorf("both members of a got event %s; want one each", e1.Id)
	}
	a1.Ack(e1.Id)
	a2.Ack(e2.Id)
	got := map[string]bool{other.Next().GetMemberQuit().GetGroupId(): true, other.Next().GetMemberQuit().GetGroupId(): true}
	if !got["G1"] || !got["G2"] {
		t.Errorf("group b got %v; want both events", got)
	}
}

// TestAckSeveral: one Ack message settles several events; ids not pending are ignored.
func TestAckSeveral(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "batch", MaxInFlight: 2})
	for _, g := range []string{"G1", "G2", "G3", "G4"} {
		postQuit(t, b, g)
	}
	e1, e2 := sub.Next(), sub.Next()
	// With two in flight, G3 and G4 both come only once one Ack message has freed both slots.
	sub.Ack(e1.Id, e2.Id, "no-such-event", e1.Id)
	got := map[string]bool{sub.Next().GetMemberQuit().GetGroupId(): true, sub.Next().GetMemberQuit().GetGroupId(): true}
	if !got["G3"] || !got["G4"] {
		t.Errorf("after acking two events got %v; want G3 and G4", got)
	}
}

// TestRedeliveryAfterDrop: a member that leaves without acking hands its event to another member.
func TestRedeliveryAfterDrop(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	first := b.Subscribe(t, &pb.Subscription{Group: "workers"})
	postQuit(t, b, "G1")
	ev := first.Next()
	second := b.Subscribe(t, &pb.Subscription{Group: "workers"})
	first.Cancel() // dropped without acking
	again := second.Next()
	if again.Id != ev.Id || again.Sequence != ev.Sequence {
		t.Errorf("redelivered %s/%d; want %s/%d", again.Id, again.Sequence, ev.Id, ev.Sequence)
	}
	second.Ack(again.Id)
}

// TestGroupDeletedUnderMember: a member whose consumer group is deleted from the log (nats consumer
// rm) is told so with Unavailable, rather than waiting for events that cannot come.
func TestGroupDeletedUnderMember(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "doomed"})
	if err := b.Log.JetStream().DeleteConsumer(t.Context(), b.Log.Stream(), "doomed"); err != nil {
		t.Fatal(err)
	}
	if err := sub.End(); status.Code(err) != codes.Unavailable {
		t.Errorf("member ended with %v; want Unavailable", err)
	}
}

// TestFilter: a group receives only matching events.
func TestFilter(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "g2only", Filter: &pb.EventFilter{
		Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_MEMBER_QUIT}, GroupIds: []string{"G2"},
	}})
	tail := b.Subscribe(t, &pb.Subscription{Filter: &pb.EventFilter{Sources: []pb.Source{pb.Source_SOURCE_TENCENT}}})
	postQuit(t, b, "G1")
	postExample(t, b, examples.Must("tencent-after-member-exit"))
	postQuit(t, b, "G2")
	if ev := sub.Next(); ev.GetMemberQuit().GetGroupId() != "G2" {
		t.Errorf("group got %v; want only the quit from G2", ev)
	}
	if ev := tail.Next(); ev.Source != pb.Source_SOURCE_TENCENT {
		t.Errorf("tail got %v; want only the Tencent event", ev)
	}
}

func TestSubscribeValidation(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	for _, sub := range []*pb.Subscription{
		{Decide: true},
		{Group: "has space"},
		{Group: "a.b"},
		{Filter: &pb.EventFilter{Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_UNSPECIFIED}}},
		{Group: "big", MaxInFlight: 1 << 31},
		{Filter: &pb.EventFilter{Kinds: []pb.EventKind{99}}},
		{Filter: &pb.EventFilter{Sources: []pb.Source{7}}},
	} {
		stream, err := b.Events.Subscribe(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("subscription %v: %v; want InvalidArgument", sub, err)
		}
	}
}

// TestCallbackOverGRPC: grpcurl can post a callback by hand; the event keeps a JSON body.
func TestCallbackOverGRPC(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{})
	resp, err := b.OpenIM.AfterQuitGroup(t.Context(), &pb.OpenIMQuitGroupRequest{GroupId: "G9", UserId: "u9"})
	if err != nil || resp.GetActionCode() != 0 || resp.GetNextCode() != 0 {
		t.Fatalf("AfterQuitGroup: %v, %v", resp, err)
	}
	ev := sub.Next()
	if ev.GetMemberQuit().GetGroupId() != "G9" || len(ev.RawBody) == 0 {
		t.Errorf("event %v; want G9 with a raw body", ev)
	}
}

// TestHalfClosedSubscriber: grpcurl -d '{"subscription":{}}' sends one message and closes its side;
// events must keep coming.
func TestHalfClosedSubscriber(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{})
	if err := sub.Stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	postQuit(t, b, "G1")
	if ev := sub.Next(); ev.GetMemberQuit().GetGroupId() != "G1" {
		t.Errorf("event %v; want the quit from G1", ev)
	}
}

// TestRedeliveryAfterAckWait: an event not acked within the group's ack wait is delivered again.
func TestRedeliveryAfterAckWait(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "slow", AckWait: durationpb.New(500 * time.Millisecond)})
	postQuit(t, b, "G1")
	first := sub.Next()
	again := sub.Next() // not acked: back after the ack wait
	if again.Id != first.Id {
		t.Errorf("redelivered %s; want %s", again.Id, first.Id)
	}
	sub.Ack(again.Id)
}

// TestGroupSettingsBelongToTheGroup: members of one group must agree on its filter and decide flag
// while it is in use; an idle group takes new settings.
func TestGroupSettingsBelongToTheGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := bridgetest.Start(t, bridgetest.Options{DataDir: dir})
	g1 := &pb.EventFilter{GroupIds: []string{"G1"}}
	first := b.Subscribe(t, &pb.Subscription{Group: "g", Filter: g1})
	for _, other := range []*pb.Subscription{
		{Group: "g", Filter: &pb.EventFilter{GroupIds: []string{"G2"}}},
		{Group: "g"},
		{Group: "g", Filter: g1, Decide: true},
		{Group: "g", Filter: g1, AckWait: durationpb.New(time.Minute)},
	} {
		stream, err := b.Events.Subscribe(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: other}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("member with %v: %v; want FailedPrecondition", other, err)
		}
	}
	same := b.Subscribe(t, &pb.Subscription{Group: "g", Filter: g1}) // agrees: joins
	postQuit(t, b, "G2")
	postQuit(t, b, "G1")
	got := map[string]bool{}
	select {
	case ev := <-nextAsync(first):
		got[ev.GetMemberQuit().GetGroupId()] = true
		first.Ack(ev.Id)
	case ev := <-nextAsync(same):
		got[ev.GetMemberQuit().GetGroupId()] = true
		same.Ack(ev.Id)
	}
	if !got["G1"] || len(got) != 1 {
		t.Errorf("group g got %v; want only G1", got)
	}
	// With no member connected (here: after a restart), a member with other settings replaces them.
	b.Close()
	b = bridgetest.Start(t, bridgetest.Options{DataDir: dir})
	g2 := b.Subscribe(t, &pb.Subscription{Group: "g", Filter: &pb.EventFilter{GroupIds: []string{"G2"}}})
	postQuit(t, b, "G1")
	postQuit(t, b, "G2")
	if ev := g2.Next(); ev.GetMemberQuit().GetGroupId() != "G2" {
		t.Errorf("after the change group g got %v; want G2", ev.GetMemberQuit())
	}
}

// nextAsync receives the next event in the background.
func nextAsync(s *bridgetest.Sub) <-chan *pb.Event {
	ch := make(chan *pb.Event, 1)
	go func() {
		resp, err := s.Stream.Recv()
		if err == nil && resp.GetEvent() != nil {
			ch <- resp.GetEvent()
		}
	}()
	return ch
}

// TestBusyMemberDoesNotHoard: a member with no free slot does not take events an idle member can.
func TestBusyMemberDoesNotHoard(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	busy := b.Subscribe(t, &pb.Subscription{Group: "w", MaxInFlight: 1})
	postQuit(t, b, "G0")
	held := busy.Next() // never acked: busy has no free slot from now on
	idle := b.Subscribe(t, &pb.Subscription{Group: "w", MaxInFlight: 1})
	for i := 1; i <= 5; i++ {
		postQuit(t, b, "G"+strconv.Itoa(i))
	}
	for i := 1; i <= 5; i++ {
		ev := idle.Next()
		if want := "G" + strconv.Itoa(i); ev.GetMemberQuit().GetGroupId() != want {
			t.Errorf("idle member got %v; want the quit from %s", ev.GetMemberQuit(), want)
		}
		idle.Ack(ev.Id)
	}
	busy.Ack(held.Id)
}

// TestExternalNATS: the whole bridge on an external NATS server (--nats-url), on a loopback port.
func TestExternalNATS(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{NATSURL: bridgetest.ExternalNATS(t)})
	postQuit(t, b, "G1")
	if ev := b.Subscribe(t, &pb.Subscription{Group: "ext"}).Next(); ev.GetMemberQuit().GetGroupId() != "G1" {
		t.Errorf("event %v; want the quit from G1", ev)
	}
}
