package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// orderedEvent is "<IM group>-<index>" for the index-th event of that IM group.
func orderedEvent(group string, i int) *pb.Event {
	return quitEvent(group+"-"+strconv.Itoa(i), group)
}

// delivery is an event one of several members received.
type delivery struct {
	member int
	ev     *pb.Event
	err    error
}

// receiveAll forwards what each sub receives to one channel, until its stream ends.
func receiveAll(subs ...*bridgetest.Sub) <-chan delivery {
	out := make(chan delivery, 64)
	for i, s := range subs {
		go func() {
			for {
				resp, err := s.Stream.Recv()
				if err != nil {
					out <- delivery{member: i, err: err}
					return
				}
				out <- delivery{member: i, ev: resp.GetEvent()}
			}
		}()
	}
	return out
}

func nextDelivery(t *testing.T, ch <-chan delivery) delivery {
	t.Helper()
	select {
	case d := <-ch:
		if d.err != nil {
			t.Fatalf("member %d: %v", d.member, d.err)
		}
		return d
	case <-time.After(bridgetest.Timeout):
		t.Fatalf("no event in %v", bridgetest.Timeout)
		return delivery{}
	}
}

// orderChecker checks that the events of an IM group are never out to two members at once and come
// in the order they were stored.
type orderChecker struct {
	t    *testing.T
	out  map[string]string // IM group -> event out
	next map[string]int    // IM group -> index of the event it must get next
}

func newOrderChecker(t *testing.T) *orderChecker {
	return &orderChecker{t: t, out: map[string]string{}, next: map[string]int{}}
}

func (c *orderChecker) got(d delivery) {
	c.t.Helper()
	group, idx, _ := strings.Cut(d.ev.Id, "-")
	if held, ok := c.out[group]; ok {
		c.t.Fatalf("member %d got %s while %s of the same IM group is out", d.member, d.ev.Id, held)
	}
	if want := strconv.Itoa(c.next[group]); idx != want {
		c.t.Fatalf("member %d got %s; want %s-%s next", d.member, d.ev.Id, group, want)
	}
	c.out[group] = d.ev.Id
}

func (c *orderChecker) settled(id string, acked bool) {
	group, _, _ := strings.Cut(id, "-")
	delete(c.out, group)
	if acked {
		c.next[group]++
	}
}

// TestOrderedGroup: an ordered group's members get the events of each IM group one at a time, in
// log order, while different IM groups go to every member at once; a nacked event comes again
// before the later ones of its IM group.
func TestOrderedGroup(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := &pb.Subscription{Group: "o", Order: pb.Order_ORDER_IM_GROUP, MaxInFlight: 2}
	subs := []*bridgetest.Sub{b.Subscribe(t, sub), b.Subscribe(t, sub), b.Subscribe(t, sub)}
	const groups, perGroup = 8, 4
	store := func(i int) { // a record with the i-th event of every IM group
		evs := make([]*pb.Event, 0, groups)
		for g := range groups {
			evs = append(evs, orderedEvent("G"+strconv.Itoa(g), i))
		}
		storeRecord(t, b, evs...)
	}
	store(0)
	store(1)
	ch := receiveAll(subs...)
	check := newOrderChecker(t)
	type held struct {
		member int
		id     string
	}
	var out []held
	// Every member fills up: 3 members of 2 slots, 8 IM groups ready.
	perMember := map[int]int{}
	for range 6 {
		d := nextDelivery(t, ch)
		check.got(d)
		perMember[d.member]++
		out = append(out, held{d.member, d.ev.Id})
	}
	for i := range subs {
		if perMember[i] != 2 {
			t.Fatalf("member %d got %d events; want 2 each (%v)", i, perMember[i], perMember)
		}
	}
	store(2) // while events of every IM group are out or waiting
	store(3)
	// Until every event is acked: take what the bridge has to give (while a slot is free and an IM
	// group has an event not out), then settle the oldest event held.
	deliverable := func() bool {
		if len(out) == len(subs)*2 {
			return false
		}
		for g := range groups {
			key := "G" + strconv.Itoa(g)
			if _, busy := check.out[key]; !busy && check.next[key] < perGroup {
				return true
			}
		}
		return false
	}
	nacked := false
	for done := 0; done < groups*perGroup; {
		for deliverable() {
			d := nextDelivery(t, ch)
			check.got(d)
			out = append(out, held{d.member, d.ev.Id})
		}
		h := out[0]
		out = out[1:]
		if h.id == "G0-0" && !nacked {
			nacked = true
			subs[h.member].Nack("not yet", 0, h.id)
			check.settled(h.id, false)
			continue
		}
		subs[h.member].Ack(h.id)
		check.settled(h.id, true)
		done++
	}
	if !nacked {
		t.Fatal("G0-0 never came")
	}
	bridgetest.WaitFor(t, "every record acked", func() bool {
		g, err := pb.NewAdminServiceClient(b.Conn).GetGroup(t.Context(), &pb.GetGroupRequest{Name: "o"})
		return err == nil && g.UnackedRecords == 0 && g.PendingRecords == 0 && g.Order == pb.Order_ORDER_IM_GROUP
	})
}

// TestOrderedMemberLeaves: what a member of an ordered group held comes to another member first,
// before the later events of the same IM groups.
func TestOrderedMemberLeaves(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := &pb.Subscription{Group: "o", Order: pb.Order_ORDER_IM_GROUP}
	first := b.Subscribe(t, sub)
	storeRecord(t, b, orderedEvent("A", 0), orderedEvent("B", 0), orderedEvent("A", 1), orderedEvent("B", 1))
	got := map[string]bool{first.Next().Id: true, first.Next().Id: true}
	if !got["A-0"] || !got["B-0"] {
		t.Fatalf("first member got %v; want A-0 and B-0 (the heads of A and B)", got)
	}
	second := b.Subscribe(t, &pb.Subscription{Group: "o"}) // order unset: the group's
	first.Cancel()
	check := newOrderChecker(t)
	ch := receiveAll(second)
	for range 4 {
		d := nextDelivery(t, ch)
		check.got(d)
		second.Ack(d.ev.Id)
		check.settled(d.ev.Id, true)
	}
}

// TestOrderedDeadLetter: an event of an ordered group nacked max_deliveries times becomes a dead
// letter, and its IM group goes on with the next event.
func TestOrderedDeadLetter(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	s := b.Subscribe(t, &pb.Subscription{Group: "o", Order: pb.Order_ORDER_IM_GROUP, MaxDeliveries: 2})
	storeRecord(t, b, orderedEvent("A", 0), orderedEvent("A", 1))
	for i := range 2 {
		if ev := s.Next(); ev.Id != "A-0" {
			t.Fatalf("delivery %d: %s; want A-0", i+1, ev.Id)
		}
		s.Nack("poison "+strconv.Itoa(i+1), time.Millisecond, "A-0")
	}
	if ev := s.Next(); ev.Id != "A-1" {
		t.Fatalf("after max_deliveries: %s; want A-1", ev.Id)
	}
	s.Ack("A-1")
	list := waitDeadLetters(t, pb.NewAdminServiceClient(b.Conn), "o", 1)
	if dl := list[0]; dl.EventId != "A-0" || dl.Reason != "poison 2" || dl.Deliveries != 2 {
		t.Fatalf("dead letter %v; want A-0, poison 2, 2 deliveries", dl)
	}
}

// TestOrderedAcrossInstances: an ordered group is read by one instance at a time; when its last
// member there leaves, another instance's members take over at once, with what was left unacked
// first and the IM groups' order kept.
func TestOrderedAcrossInstances(t *testing.T) {
	t.Parallel()
	url := bridgetest.ExternalNATS(t)
	one := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	two := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	sub := &pb.Subscription{Group: "o", Order: pb.Order_ORDER_IM_GROUP, MaxInFlight: 10}
	a := one.Subscribe(t, sub)
	storeRecord(t, one, orderedEvent("A", 0))
	if ev := a.Next(); ev.Id != "A-0" { // the first instance is pinned now
		t.Fatalf("got %s; want A-0", ev.Id)
	}
	b := two.Subscribe(t, sub)
	storeRecord(t, one, orderedEvent("B", 0), orderedEvent("A", 1))
	if ev := a.Next(); ev.Id != "B-0" {
		t.Fatalf("got %s; want B-0 (A-1 waits for A-0)", ev.Id)
	}
	a.Ack("B-0")
	storeRecord(t, one, orderedEvent("B", 1), orderedEvent("C", 0))
	got := map[string]bool{}
	for range 2 { // different IM groups: in either order
		ev := a.Next()
		got[ev.Id] = true
		a.Ack(ev.Id)
	}
	if !got["B-1"] || !got["C-0"] {
		t.Fatalf("got %v; want B-1 and C-0", got)
	}
	bridgetest.WaitFor(t, "3 acks taken", func() bool {
		return metricWith(t, one, "imbridge_acks_total", map[string]string{"group": "o"}) == 3
	})
	a.Cancel() // A-0 unacked
	check := newOrderChecker(t)
	check.next["A"], check.next["B"], check.next["C"] = 0, 2, 1
	storeRecord(t, one, orderedEvent("A", 2), orderedEvent("C", 1))
	ch := receiveAll(b)
	for range 4 { // and C-1
		d := nextDelivery(t, ch)
		check.got(d)
		b.Ack(d.ev.Id)
		check.settled(d.ev.Id, true)
	}
	if check.next["A"] != 3 || check.next["C"] != 2 {
		t.Fatalf("the second instance got A up to %d, C up to %d; want 3, 2", check.next["A"], check.next["C"])
	}
}

// TestOrderSettings: order needs a group and no decide, is the group's, and is fixed once the
// group exists.
func TestOrderSettings(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	for _, tc := range []struct {
		sub  *pb.Subscription
		code codes.Code
	}{
		{&pb.Subscription{Order: pb.Order_ORDER_IM_GROUP}, codes.InvalidArgument},
		{&pb.Subscription{Group: "d", Decide: true, Order: pb.Order_ORDER_IM_GROUP}, codes.InvalidArgument},
		{&pb.Subscription{Group: "x", Order: 7}, codes.InvalidArgument},
	} {
		if err := subscribeErr(t, b, tc.sub); status.Code(err) != tc.code {
			t.Errorf("%v: %v; want %v", tc.sub, err, tc.code)
		}
	}
	plain := b.Subscribe(t, &pb.Subscription{Group: "plain"})
	err := subscribeErr(t, b, &pb.Subscription{Group: "plain", Order: pb.Order_ORDER_IM_GROUP})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "fixed") {
		t.Errorf("ordering an unordered group: %v; want FailedPrecondition naming the rule", err)
	}
	plain.Cancel()
	waitGroupIdle(t, b, "plain")
	if err := subscribeErr(t, b, &pb.Subscription{Group: "plain", Order: pb.Order_ORDER_IM_GROUP}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ordering an unordered group without members: %v; want FailedPrecondition", err)
	}
	o := b.Subscribe(t, &pb.Subscription{Group: "o", Order: pb.Order_ORDER_IM_GROUP})
	o.Cancel()
	waitGroupIdle(t, b, "o")
	if err := subscribeErr(t, b, &pb.Subscription{Group: "o", Decide: true}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("an ordered group made a decider: %v; want FailedPrecondition", err)
	}
	storeRecord(t, b, orderedEvent("A", 0))
	s := b.Subscribe(t, &pb.Subscription{Group: "o"})
	if ev := s.Next(); ev.Id != "A-0" {
		t.Fatalf("got %s", ev.Id)
	}
}
