package e2e

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// TestReplay: a live tail and a new group start at a stream sequence or a time, replay what the log
// holds from there and go on with new events; a tail that reconnects with the sequence after the
// last one it saw misses nothing.
func TestReplay(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	for _, id := range []string{"e1", "e2", "e3"} {
		storeRecord(t, b, quitEvent(id, "G"))
	}
	tail := b.Subscribe(t, &pb.Subscription{StartSequence: 2})
	if ev := tail.Next(); ev.Id != "e2" || ev.Sequence != 2 {
		t.Fatalf("tail from 2: %s at %d; want e2 at 2", ev.Id, ev.Sequence)
	}
	last := tail.Next().Sequence
	tail.Cancel()
	storeRecord(t, b, quitEvent("e4", "G")) // stored while no tail is connected
	resumed := b.Subscribe(t, &pb.Subscription{StartSequence: last + 1})
	if ev := resumed.Next(); ev.Id != "e4" {
		t.Fatalf("resumed tail: %s; want e4", ev.Id)
	}
	storeRecord(t, b, quitEvent("e5", "G"))
	if ev := resumed.Next(); ev.Id != "e5" {
		t.Fatalf("resumed tail, live: %s; want e5", ev.Id)
	}

	group := b.Subscribe(t, &pb.Subscription{Group: "late", StartSequence: 4})
	if ev := group.Next(); ev.Id != "e4" {
		t.Fatalf("group from 4: %s; want e4", ev.Id)
	}

	byTime := b.Subscribe(t, &pb.Subscription{StartTime: timestamppb.New(time.Now().Add(-time.Hour))})
	if ev := byTime.Next(); ev.Id != "e1" {
		t.Fatalf("tail from an hour ago: %s; want e1", ev.Id)
	}
	if ev := group.Next(); ev.Id != "e5" {
		t.Fatalf("group: %s; want e5", ev.Id)
	}
}

// TestStartValidation: one start at most; max_deliveries bounded.
func TestStartValidation(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	for name, sub := range map[string]*pb.Subscription{
		"start and sequence": {Group: "g", Start: pb.StartPosition_START_POSITION_NEW, StartSequence: 3},
		"sequence and time":  {StartSequence: 3, StartTime: timestamppb.Now()},
		"bad time":           {StartTime: &timestamppb.Timestamp{Seconds: -1 << 62}},
		"max_deliveries":     {Group: "g", MaxDeliveries: 1001},
		"past the end":       {StartSequence: 1000},
	} {
		if code, msg := subscribeCode(t, b, "", sub); code != codes.InvalidArgument {
			t.Errorf("%s: %v %s; want InvalidArgument", name, code, msg)
		}
	}
}
