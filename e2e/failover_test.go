package e2e

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// TestHeldEventsMoveOnInstanceLoss: the events a member held on an instance that died go to a member
// on a live instance after the failover wait, not after the group's ack wait (here longer than the
// test may wait).
func TestHeldEventsMoveOnInstanceLoss(t *testing.T) {
	t.Parallel()
	url := bridgetest.ExternalNATS(t)
	opts := bridgetest.Options{NATSURL: url, FailoverWait: 500 * time.Millisecond}
	one, two := bridgetest.Start(t, opts), bridgetest.Start(t, opts)
	sub := &pb.Subscription{Group: "g", AckWait: durationpb.New(time.Hour)}
	a := one.Subscribe(t, sub)
	storeRecord(t, one, orderedEvent("A", 0), orderedEvent("A", 1))
	first := a.Next()
	a.Ack(first.Id)
	held := a.Next()
	b := two.Subscribe(t, sub)
	one.Kill()
	// Within bridgetest.Timeout, far below the hour. The record may come back whole: what a member
	// acked of a record it still held is written down only when it lets go (at least once).
	got := b.Next()
	if got.Id == first.Id {
		b.Ack(got.Id)
		got = b.Next()
	}
	if got.Id != held.Id {
		t.Fatalf("the live instance got %s; want %s, held by the lost one", got.Id, held.Id)
	}
	b.Ack(got.Id)
	storeRecord(t, two, orderedEvent("B", 0))
	if ev := b.Next(); ev.Id != "B-0" {
		t.Fatalf("got %s; want B-0 (%s delivered once more)", ev.Id, got.Id)
	}
}

// TestAckWaitOutlastsFailoverWait: a live member holding an event keeps it for the group's ack
// wait, although the log's is the shorter failover wait.
func TestAckWaitOutlastsFailoverWait(t *testing.T) {
	t.Parallel()
	const failover, ackWait = 300 * time.Millisecond, 2 * time.Second
	b := bridgetest.Start(t, bridgetest.Options{FailoverWait: failover})
	s := b.Subscribe(t, &pb.Subscription{Group: "g", AckWait: durationpb.New(ackWait)})
	storeRecord(t, b, orderedEvent("A", 0))
	ev := s.Next()
	sent := time.Now()
	again := s.Next() // delivered again: the ack wait has passed
	if again.Id != ev.Id {
		t.Fatalf("got %s; want %s again", again.Id, ev.Id)
	}
	if d := time.Since(sent); d < ackWait-failover/3 {
		t.Fatalf("delivered again after %v; want the group's ack wait, %v (the log's is %v)", d, ackWait, failover)
	}
	s.Ack(ev.Id)

	c, err := b.Log.JetStream().Consumer(t.Context(), b.Log.Stream(), "g")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.AckWait; got != failover {
		t.Errorf("consumer ack wait %v; want the failover wait %v", got, failover)
	}
}

// TestGroupMadeBeforeFailoverWait: a group whose consumer predates failover waits (its ack wait is
// the group's, with no ack_wait metadata) keeps its settings and gets the failover wait once joined
// with no member connected.
func TestGroupMadeBeforeFailoverWait(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{FailoverWait: time.Second})
	s := b.Subscribe(t, &pb.Subscription{Group: "old", AckWait: durationpb.New(time.Minute)})
	s.Cancel()
	bridgetest.WaitFor(t, "member counted out", func() bool { return b.Server.Members("old") == 0 })
	js := b.Log.JetStream()
	c, err := js.Consumer(t.Context(), b.Log.Stream(), "old")
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	cfg.AckWait = time.Minute
	delete(cfg.Metadata, "imbridge.ack_wait") // as an older bridge made it
	if _, err := js.UpdateConsumer(t.Context(), b.Log.Stream(), cfg); err != nil {
		t.Fatal(err)
	}

	s = b.Subscribe(t, &pb.Subscription{Group: "old"})
	defer s.Cancel()
	c, err = js.Consumer(t.Context(), b.Log.Stream(), "old")
	if err != nil {
		t.Fatal(err)
	}
	got := c.CachedInfo().Config
	if got.AckWait != time.Second || got.Metadata["imbridge.ack_wait"] != "1m0s" {
		t.Errorf("consumer ack wait %v, metadata %q; want 1s and 1m0s", got.AckWait, got.Metadata["imbridge.ack_wait"])
	}
	g, err := pb.NewAdminServiceClient(b.Conn).GetGroup(t.Context(), &pb.GetGroupRequest{Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	if d := g.GetAckWait().AsDuration(); d != time.Minute {
		t.Errorf("group ack_wait %v; want 1m", d)
	}
}

// TestOrderedInstanceKilled: an ordered group whose reading instance dies is read by another after
// the pin timeout (10 s) and the failover wait, in order, well within the group's ack wait.
func TestOrderedInstanceKilled(t *testing.T) {
	t.Parallel()
	url := bridgetest.ExternalNATS(t)
	opts := bridgetest.Options{NATSURL: url, FailoverWait: 500 * time.Millisecond}
	one, two := bridgetest.Start(t, opts), bridgetest.Start(t, opts)
	sub := &pb.Subscription{Group: "o", Order: pb.Order_ORDER_IM_GROUP, AckWait: durationpb.New(time.Hour)}
	a := one.Subscribe(t, sub)
	storeRecord(t, one, orderedEvent("A", 0), orderedEvent("A", 1))
	if ev := a.Next(); ev.Id != "A-0" { // the first instance is pinned now
		t.Fatalf("got %s; want A-0", ev.Id)
	}
	b := two.Subscribe(t, sub) // stands by
	one.Kill()
	ch := receiveAll(b)
	for _, want := range []string{"A-0", "A-1"} {
		d := nextDelivery(t, ch)
		if d.ev.Id != want {
			t.Fatalf("the live instance got %s; want %s", d.ev.Id, want)
		}
		b.Ack(d.ev.Id)
	}
}
