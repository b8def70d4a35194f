package e2e

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// receives posts a quit from group id and checks that sub gets it, then acks it.
func receives(t *testing.T, b *bridgetest.Bridge, sub *bridgetest.Sub, group string) {
	t.Helper()
	postQuit(t, b, group)
	ev := sub.Next()
	if got := ev.GetMemberQuit().GetGroupId(); got != group {
		t.Errorf("member got the quit from %s; want %s", got, group)
	}
	sub.Ack(ev.Id)
}

// TestRejoinRules: the README's rules for joining an existing consumer group. Before the fix, a member
// joining a group that existed with settings it did not override got Subscribed, then "Unavailable:
// consumer group : 503 the consumer is gone" (the joined settings had lost the group's name).
func TestRejoinRules(t *testing.T) {
	t.Parallel()
	minute := durationpb.New(time.Minute)
	tests := []struct {
		name          string
		first, second *pb.Subscription
		firstStays    bool // the first member is still connected when the second joins
		wantCode      codes.Code
	}{
		{name: "same settings", first: &pb.Subscription{Group: "g"}, second: &pb.Subscription{Group: "g"}},
		{name: "same settings, first still connected", first: &pb.Subscription{Group: "g"}, second: &pb.Subscription{Group: "g"}, firstStays: true},
		{name: "ack wait unset takes the group's", first: &pb.Subscription{Group: "g", AckWait: minute}, second: &pb.Subscription{Group: "g"}},
		{name: "ack wait unset, first still connected", first: &pb.Subscription{Group: "g", AckWait: minute}, second: &pb.Subscription{Group: "g"}, firstStays: true},
		{name: "start on an existing group is ignored", first: &pb.Subscription{Group: "g", Start: pb.StartPosition_START_POSITION_NEW}, second: &pb.Subscription{Group: "g"}},
		{name: "start, first still connected", first: &pb.Subscription{Group: "g"}, second: &pb.Subscription{Group: "g", Start: pb.StartPosition_START_POSITION_NEW}, firstStays: true},
		{name: "other settings, nobody connected: replaced", first: &pb.Subscription{Group: "g", Filter: &pb.EventFilter{GroupIds: []string{"X"}}}, second: &pb.Subscription{Group: "g"}},
		{name: "other ack wait, nobody connected: replaced", first: &pb.Subscription{Group: "g"}, second: &pb.Subscription{Group: "g", AckWait: minute}},
		{name: "other settings, first still connected", first: &pb.Subscription{Group: "g"}, second: &pb.Subscription{Group: "g", AckWait: minute}, firstStays: true, wantCode: codes.FailedPrecondition},
		{name: "max in flight is the member's", first: &pb.Subscription{Group: "g", MaxInFlight: 1}, second: &pb.Subscription{Group: "g", MaxInFlight: 5}, firstStays: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := bridgetest.Start(t, bridgetest.Options{})
			first := b.Subscribe(t, tt.first)
			if !tt.firstStays {
				first.Cancel()
				if err := first.End(); status.Code(err) != codes.Canceled {
					t.Fatalf("first member ended with %v", err)
				}
				// The bridge counts a member out when its stream handler returns; a join right
				// after the client cancelled may still see it connected. Joining until the
				// bridge has let it go is what a client reconnecting does.
				waitGroupIdle(t, b, "g")
			}
			if tt.wantCode != codes.OK {
				if err := subscribeErr(t, b, tt.second); status.Code(err) != tt.wantCode {
					t.Errorf("second member: %v; want %v", err, tt.wantCode)
				}
				return
			}
			second := b.Subscribe(t, tt.second)
			if tt.firstStays {
				first.Cancel() // so that the event can only go to the second member
				_ = first.End()
			}
			receives(t, b, second, "G1")
		})
	}
}

// TestConcurrentFirstJoins: two bridges on one NATS server create the same new group at the same
// moment (and, the one that loses the race, join the group the other created): both members work.
func TestConcurrentFirstJoins(t *testing.T) {
	t.Parallel()
	url := bridgetest.ExternalNATS(t)
	a := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	b := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	subs := make([]*bridgetest.Sub, 2)
	var wg sync.WaitGroup
	for i, br := range []*bridgetest.Bridge{a, b} {
		// The two ask for different start positions, which only a new group heeds: whichever
		// creates the group second finds it there with another start, and joins it.
		sub := &pb.Subscription{Group: "race", MaxInFlight: 1, Start: pb.StartPosition(i)}
		wg.Go(func() { subs[i] = br.Subscribe(t, sub) })
	}
	wg.Wait()
	// One event each: with one slot, each member holds one until it acks.
	postQuit(t, a, "G1")
	postQuit(t, a, "G2")
	got := map[string]bool{}
	for _, s := range subs {
		got[s.Next().GetMemberQuit().GetGroupId()] = true
	}
	if !got["G1"] || !got["G2"] {
		t.Errorf("members got %v; want G1 and G2, one each", got)
	}
}

// subscribeErr opens a subscription the bridge is expected to refuse and returns its error.
func subscribeErr(t *testing.T, b *bridgetest.Bridge, sub *pb.Subscription) error {
	t.Helper()
	stream, err := b.Events.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// A refused stream may end before the subscription is sent: Recv has the status then.
	_ = stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}})
	resp, err := stream.Recv()
	if err == nil {
		t.Fatalf("subscription %v: got %v; want an error", sub, resp)
	}
	return err
}

// waitGroupIdle waits until no member of group is connected to b: a member's stream ends at the
// client before the bridge has counted it out.
func waitGroupIdle(t *testing.T, b *bridgetest.Bridge, group string) {
	t.Helper()
	bridgetest.WaitFor(t, "group "+group+" idle", func() bool { return b.Server.Members(group) == 0 })
}

// TestMaxSubscribers: one Subscribe stream past --max-subscribers gets ResourceExhausted; once a
// subscriber has left, a new one is taken.
func TestMaxSubscribers(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{MaxSubscribers: 2})
	first := b.Subscribe(t, &pb.Subscription{})
	b.Subscribe(t, &pb.Subscription{Group: "g"})
	if err := subscribeErr(t, b, &pb.Subscription{}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third subscriber: %v; want ResourceExhausted", err)
	}
	first.Cancel()
	_ = first.End()
	bridgetest.WaitFor(t, "a subscriber counted out", func() bool { return b.Server.Subscribers() < 2 })
	b.Subscribe(t, &pb.Subscription{})
}
