package e2e

import (
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// TestPartlyAckedRecordComesBackOnce: a member acks 63 events of a 64-event record and leaves;
// exactly the one unacked event comes again, to the next member, and nothing else.
func TestPartlyAckedRecordComesBackOnce(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	evs := make([]*pb.Event, 64)
	for i := range evs {
		evs[i] = quitEvent("e"+strconv.Itoa(i), "G")
	}
	storeRecord(t, b, evs...)
	first := b.Subscribe(t, &pb.Subscription{Group: "g", MaxInFlight: 64})
	ids := make([]string, 0, 64)
	for range 64 {
		ids = append(ids, first.Next().Id)
	}
	first.Ack(ids[0], ids[1:40]...)
	first.Ack(ids[40], ids[41:63]...) // ids[63] stays unacked
	bridgetest.WaitFor(t, "63 acks taken", func() bool {
		return metricWith(t, b, "imbridge_acks_total", map[string]string{"group": "g"}) == 63
	})
	second := b.Subscribe(t, &pb.Subscription{Group: "g", MaxInFlight: 64})
	first.Cancel()
	if ev := second.Next(); ev.Id != ids[63] {
		t.Fatalf("after the member left: %s; want %s alone", ev.Id, ids[63])
	}
	second.Ack(ids[63])
	storeRecord(t, b, quitEvent("marker", "G"))
	if ev := second.Next(); ev.Id != "marker" {
		t.Fatalf("then %s; want the next event (nothing more of the record)", ev.Id)
	}
}

// TestNackDeadLetterRedrive: an event nacked max_deliveries times becomes a dead letter with the last
// reason, no longer holds up its group, and comes back to that group alone when redriven.
func TestNackDeadLetterRedrive(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	admin := pb.NewAdminServiceClient(b.Conn)
	ctx := t.Context()
	poison := b.Subscribe(t, &pb.Subscription{Group: "poison", MaxDeliveries: 3})
	other := b.Subscribe(t, &pb.Subscription{Group: "other"})
	storeRecord(t, b, quitEvent("bad", "G"))
	for i := 1; i <= 3; i++ {
		ev := poison.Next()
		if ev.Id != "bad" {
			t.Fatalf("delivery %d: %s; want bad", i, ev.Id)
		}
		poison.Nack("cannot parse "+strconv.Itoa(i), 0, ev.Id)
	}
	if ev := other.Next(); ev.Id != "bad" {
		t.Fatalf("other group: %s; want bad", ev.Id)
	}
	other.Ack("bad")

	// The fourth delivery is a dead letter instead: the group goes on with the next event.
	storeRecord(t, b, quitEvent("next", "G"))
	if ev := poison.Next(); ev.Id != "next" {
		t.Fatalf("after 3 deliveries: %s; want next (bad dead-lettered)", ev.Id)
	}
	poison.Ack("next")
	if ev := other.Next(); ev.Id != "next" {
		t.Fatalf("other group: %s; want next", ev.Id)
	}
	other.Ack("next")
	list := waitDeadLetters(t, admin, "poison", 1)
	dl := list[0]
	if dl.Group != "poison" || dl.EventId != "bad" || dl.Reason != "cannot parse 3" || dl.Deliveries != 3 ||
		dl.EventSequence != 1 || dl.Kind != pb.EventKind_EVENT_KIND_MEMBER_QUIT || dl.Stored == nil || dl.DeadLettered == nil || dl.Event != nil {
		t.Errorf("dead letter %v; want group poison, event bad, the last reason, 3 deliveries, sequence 1", dl)
	}
	full, err := admin.GetDeadLetter(ctx, &pb.GetDeadLetterRequest{Sequence: dl.Sequence})
	if err != nil || full.GetEvent().GetMemberQuit().GetGroupId() != "G" || full.Event.Sequence != 1 {
		t.Fatalf("GetDeadLetter: %v %v; want the whole event", full, err)
	}
	bridgetest.WaitFor(t, "imbridge_dead_letters_total 1 (counted once the record is let go of)", func() bool {
		return metricWith(t, b, "imbridge_dead_letters_total", map[string]string{"group": "poison"}) == 1
	})
	if m := metricWith(t, b, "imbridge_nacks_total", map[string]string{"group": "poison"}); m != 3 {
		t.Errorf("imbridge_nacks_total = %v; want 3", m)
	}

	// Redriven: the poison group gets it again, same id; the other group does not.
	r, err := admin.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{Group: "poison"})
	if err != nil || r.Redriven != 1 {
		t.Fatalf("redrive: %v %v; want 1", r, err)
	}
	if ev := poison.Next(); ev.Id != "bad" {
		t.Fatalf("after redrive: %s; want bad", ev.Id)
	}
	poison.Ack("bad")
	storeRecord(t, b, quitEvent("after", "G"))
	if ev := other.Next(); ev.Id != "after" {
		t.Fatalf("other group after the redrive: %s; want after (a redrive is for its group only)", ev.Id)
	}
	if list, err := admin.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{}); err != nil || len(list.DeadLetters) != 0 {
		t.Errorf("dead letters after the redrive: %v %v; want none", list, err)
	}
	if _, err := admin.GetDeadLetter(ctx, &pb.GetDeadLetterRequest{Sequence: dl.Sequence}); status.Code(err) != codes.NotFound {
		t.Errorf("GetDeadLetter of a redriven letter: %v; want NotFound", err)
	}
}

// TestDeadLetterPartOfRecord: of a record whose events were partly acked, only the others become
// dead letters; a purge removes them.
func TestDeadLetterPartOfRecord(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	admin := pb.NewAdminServiceClient(b.Conn)
	ctx := t.Context()
	sub := b.Subscribe(t, &pb.Subscription{Group: "g", MaxDeliveries: 1})
	storeRecord(t, b, quitEvent("e1", "G"), quitEvent("e2", "G"), quitEvent("e3", "G"))
	for range 3 {
		sub.Next()
	}
	sub.Ack("e2")
	sub.Nack("down", 0, "e1", "e3")
	storeRecord(t, b, quitEvent("next", "G"))
	if ev := sub.Next(); ev.Id != "next" {
		t.Fatalf("got %s; want next (e1 and e3 dead-lettered at their second delivery)", ev.Id)
	}
	waitDeadLetters(t, admin, "g", 2)
	list, err := admin.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{Group: "g", Limit: 1})
	if err != nil || len(list.DeadLetters) != 1 || list.DeadLetters[0].EventId != "e1" || list.NextAfter == 0 {
		t.Fatalf("first page: %v %v; want e1 and a next page", list, err)
	}
	list, err = admin.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{Group: "g", AfterSequence: list.NextAfter})
	if err != nil || len(list.DeadLetters) != 1 || list.DeadLetters[0].EventId != "e3" || list.DeadLetters[0].Reason != "down" {
		t.Fatalf("second page: %v %v; want e3, reason down", list, err)
	}
	if _, err := admin.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{Group: "other", Sequences: []uint64{list.DeadLetters[0].Sequence}}); status.Code(err) != codes.NotFound {
		t.Errorf("redrive of another group's letter: %v; want NotFound", err)
	}
	p, err := admin.PurgeDeadLetters(ctx, &pb.PurgeDeadLettersRequest{Group: "g"})
	if err != nil || p.Purged != 2 {
		t.Fatalf("purge: %v %v; want 2", p, err)
	}
	if list, err := admin.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{Group: "g"}); err != nil || len(list.DeadLetters) != 0 {
		t.Errorf("after the purge: %v %v; want none", list, err)
	}
}

// TestNackDelay: a nacked event comes back no sooner than its delay, to any member.
func TestNackDelay(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "g"})
	storeRecord(t, b, quitEvent("e1", "G"))
	ev := sub.Next()
	const delay = 300 * time.Millisecond
	start := time.Now()
	sub.Nack("busy", delay, ev.Id)
	if again := sub.Next(); again.Id != "e1" {
		t.Fatalf("got %s; want e1 again", again.Id)
	}
	if d := time.Since(start); d < delay {
		t.Errorf("came back after %v; want no sooner than %v", d, delay)
	}
}

// TestBadNack: a nack out of bounds ends the stream with InvalidArgument.
func TestBadNack(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	for name, n := range map[string]*pb.Nack{
		"long reason":    {EventId: "x", Reason: string(make([]byte, 2000))},
		"negative delay": {EventId: "x", Delay: durationpb.New(-time.Second)},
		"long delay":     {EventId: "x", Delay: durationpb.New(2 * time.Hour)},
	} {
		sub := b.Subscribe(t, &pb.Subscription{Group: "g"})
		if err := sub.Stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: n}}); err != nil {
			t.Fatal(err)
		}
		if err := sub.End(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v; want InvalidArgument", name, err)
		}
	}
}

// waitDeadLetters waits until group has n dead letters (they are written as the record that held
// them comes back, which the subscriber does not see) and returns them.
func waitDeadLetters(t *testing.T, admin pb.AdminServiceClient, group string, n int) []*pb.DeadLetter {
	t.Helper()
	var list []*pb.DeadLetter
	bridgetest.WaitFor(t, "dead letters of "+group, func() bool {
		resp, err := admin.ListDeadLetters(t.Context(), &pb.ListDeadLettersRequest{Group: group})
		if err != nil {
			t.Fatal(err)
		}
		list = resp.DeadLetters
		return len(list) >= n
	})
	if len(list) != n {
		t.Fatalf("%d dead letters of %s; want %d", len(list), group, n)
	}
	return list
}

// TestResetForgetsAcks: a group moved back gets the events of a record again whole, although it
// acked part of that record before the move.
func TestResetForgetsAcks(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	admin := pb.NewAdminServiceClient(b.Conn)
	storeRecord(t, b, quitEvent("e1", "G"), quitEvent("e2", "G"))
	first := b.Subscribe(t, &pb.Subscription{Group: "g"})
	first.Next()
	first.Next()
	first.Ack("e1")
	bridgetest.WaitFor(t, "the ack taken", func() bool {
		return metricWith(t, b, "imbridge_acks_total", map[string]string{"group": "g"}) == 1
	})
	first.Cancel() // e1 written down as acked, the record handed back
	bridgetest.WaitFor(t, "the member gone", func() bool { return b.Server.Members("g") == 0 })
	if _, err := admin.ResetGroup(t.Context(), &pb.ResetGroupRequest{Name: "g", To: &pb.ResetGroupRequest_Sequence{Sequence: 1}}); err != nil {
		t.Fatal(err)
	}
	again := b.Subscribe(t, &pb.Subscription{Group: "g"})
	if got := []string{again.Next().Id, again.Next().Id}; got[0] != "e1" || got[1] != "e2" {
		t.Errorf("after the reset: %v; want [e1 e2]", got)
	}
	// Handed back unacked: delivered a second time since the reset, when what the group did with
	// the record is read back, and nothing from before the reset may count.
	third := b.Subscribe(t, &pb.Subscription{Group: "g"})
	again.Cancel()
	if got := []string{third.Next().Id, third.Next().Id}; got[0] != "e1" || got[1] != "e2" {
		t.Errorf("handed back after the reset: %v; want [e1 e2]", got)
	}
}

// TestDeadLetterHeldNacked: a record past max_deliveries while its member still holds it, one event
// nacked and waiting for the rest: both become dead letters.
func TestDeadLetterHeldNacked(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	admin := pb.NewAdminServiceClient(b.Conn)
	sub := b.Subscribe(t, &pb.Subscription{Group: "g", MaxDeliveries: 1, AckWait: durationpb.New(500 * time.Millisecond)})
	storeRecord(t, b, quitEvent("a", "G"), quitEvent("b", "G"))
	sub.Next()
	sub.Next()
	sub.Nack("later", 0, "a") // b stays unacked past the ack wait: the record comes again, past the limit
	got := map[string]bool{}
	for _, dl := range waitDeadLetters(t, admin, "g", 2) {
		got[dl.EventId] = true
	}
	if !got["a"] || !got["b"] {
		t.Errorf("dead letters %v; want a and b", got)
	}
}
