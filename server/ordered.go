package server

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// An ordered consumer group (Subscription.order = ORDER_IM_GROUP) delivers the events of one IM
// group one at a time, in log order, while events of different IM groups go to its members at once.
//
// Records hold the events of many IM groups (group commit), so the log cannot be partitioned by IM
// group. Instead, one instance at a time reads the group: its consumer is pinned (a JetStream
// priority group with the pinned-client policy), and the other instances' pulls wait until that
// instance lets go of the pin or its pin times out. On that instance a reader (a member without a
// stream) pulls the records and holds them, and the orderedGroup hands their events to the
// instance's members: per IM group a queue, whose head alone is out to a member, nacked and delayed,
// or ready. A member's ack readies the next event of that IM group and settles the event in the
// reader's record (inflight.go), which is acked to the log once all its events are. A nacked
// event, or one whose member left, stays the head of its IM group and goes out again first; past
// max_deliveries it is dead-lettered and the IM group moves on.
//
// When a reader is given the pin, records the previous one held may still be on their way back (it
// handed them back, or it died and their ack wait runs out), and the log does not redeliver them in
// order. So a reader that has just been pinned catches up first: it gives out nothing, putting each
// IM group's events in log order, until every record pending in the group is with it (or acked), or
// the log's ack wait has passed. A graceful handover takes milliseconds; after an instance is
// killed, the group waits for its pin to time out (pinnedTTL) and then for its records' log ack wait
// (the failover wait).
//
// A reader that loses its pin (it was quiet for pinnedTTL, or the consumer's leader changed), or
// whose pull request was lost, stops: its members are cut off and reconnect, and the next reader
// catches up, so that the group is never read by two instances at once nor past lost records.

// pinGroup is the priority group of an ordered group's consumer.
const pinGroup = "imbridge"

// pinnedTTL is how long the log keeps an instance pinned without a pull request from it: after an
// instance is killed, its ordered groups wait that long for another reader. A reader's pull request
// lasts pinnedPullExpires; a reader with no room sends one every pinKeepAlive.
const (
	pinnedPullExpires = 5 * time.Second
	pinnedTTL         = 2 * pinnedPullExpires
	pinKeepAlive      = pinnedPullExpires / 3
)

// orderedHeld bounds the events the reader of an ordered group holds for its members.
const orderedHeld = MaxInFlight

// orderedGroup is an instance's reader of an ordered group and the IM-group queues it fills.
type orderedGroup struct {
	s             *Server
	name          string
	reader        *member
	maxDeliveries int
	cancel        context.CancelFunc // stops the reader
	stopped       chan struct{}      // closed once the reader handed its records back

	members int // connected here; guarded by s.groupsMu

	mu     sync.Mutex
	wake   chan struct{}              // closed and replaced when an event is ready or a member has room
	ready  []*orderedEvent            // events free to go out, in the order they became so
	queues map[string][]*orderedEvent // by IM group, its events held, in log order
	byID   map[string]*orderedEvent   // every event held
	err    error                      // why the reader stopped, when it failed
	// catchingUp: the reader was just pinned and gives out nothing yet (catchUp).
	catchingUp bool
	held       []*orderedEvent // events of no IM group that came while catching up
}

// orderedEvent is one event held by an ordered group's reader.
type orderedEvent struct {
	outgoing
	key        string  // its IM group; "" for none
	deliveries int     // to this group: to readers before, and to members here
	holder     *member // the member it is out to; guarded by orderedGroup.mu
	reason     string  // the last nack's; guarded by orderedGroup.mu
}

// joinOrdered counts member m in to its instance's reader of the ordered group it joined, starting
// the reader for the first one. The returned function counts m out, handing back what it holds, and
// stops the reader after the last member.
func (s *Server) joinOrdered(m *member) func() {
	s.groupsMu.Lock()
	og := s.ordered[m.sub.Group]
	if og == nil {
		og = s.startOrdered(m.sub, m.logAckWait, s.orderedStopped[m.sub.Group])
		s.ordered[m.sub.Group] = og
	}
	og.members++
	s.groupsMu.Unlock()
	m.ordered = og
	return func() {
		og.handBack(m)
		s.groupsMu.Lock()
		og.members--
		last := og.members == 0
		if last && s.ordered[og.name] == og {
			delete(s.ordered, og.name)
			s.orderedStopped[og.name] = og.stopped // a reader started next waits for this one
		}
		s.groupsMu.Unlock()
		if !last {
			return
		}
		og.cancel()
		<-og.stopped
		s.groupsMu.Lock()
		if s.orderedStopped[og.name] == og.stopped {
			delete(s.orderedStopped, og.name)
		}
		s.groupsMu.Unlock()
	}
}

// startOrdered starts an instance's reader of an ordered group, once the one before it (prev, if
// not nil) has stopped.
func (s *Server) startOrdered(sub *pb.Subscription, logAckWait time.Duration, prev <-chan struct{}) *orderedGroup {
	ctx, cancel := context.WithCancel(context.Background()) // stopped by the last member leaving
	og := &orderedGroup{
		s: s, name: sub.Group, maxDeliveries: maxDeliveriesOf(sub), cancel: cancel, stopped: make(chan struct{}),
		wake: make(chan struct{}), queues: map[string][]*orderedEvent{}, byID: map[string]*orderedEvent{},
	}
	r := newMember(s, sub)
	r.who = "(reader)"
	r.max, r.ackWait, r.logAckWait, r.maxDeliveries = orderedHeld, ackWaitOf(sub), logAckWait, og.maxDeliveries
	r.gm = s.metrics.forGroup(sub.Group)
	r.dispatch, r.pinned = og, true
	og.reader = r
	go func() {
		defer close(og.stopped)
		if prev != nil {
			select {
			case <-prev:
			case <-ctx.Done():
				return
			}
		}
		stopKeeping := r.keepHeld(ctx)
		err := r.fetch(ctx)
		cancel()
		stopKeeping()
		if err != nil {
			s.logger.Warn("ordered group reader stopped", "group", og.name, "err", err)
			og.fail(err)
		}
		r.release()
		r.unpin()
	}()
	return og
}

// fail tells the members the reader stopped with err, and lets the next member start another.
func (og *orderedGroup) fail(err error) {
	og.mu.Lock()
	og.err = err
	og.broadcast()
	og.mu.Unlock()
	og.s.groupsMu.Lock()
	if og.s.ordered[og.name] == og {
		delete(og.s.ordered, og.name)
		og.s.orderedStopped[og.name] = og.stopped
	}
	og.s.groupsMu.Unlock()
}

// broadcast wakes the members waiting in next. og.mu is held.
func (og *orderedGroup) broadcast() {
	close(og.wake)
	og.wake = make(chan struct{})
}

// add takes the events of a record the reader got (the delivered-th delivery of the record to a
// reader). Events held already (the record came again) are left as they are.
func (og *orderedGroup) add(evs []outgoing, delivered uint64) {
	og.mu.Lock()
	defer og.mu.Unlock()
	for _, o := range evs {
		if og.byID[o.id] != nil {
			continue
		}
		ev := &orderedEvent{outgoing: o, key: o.key, deliveries: int(delivered) - 1}
		og.byID[o.id] = ev
		switch {
		case ev.key == "" && og.catchingUp:
			og.held = append(og.held, ev)
		case ev.key == "":
			og.ready = append(og.ready, ev)
		default:
			og.queue(ev)
		}
	}
	og.broadcast()
}

// queue puts ev in its IM group's queue, in log order (records come out of order while catching
// up), and readies it if it is the head. The head is not displaced once it is ready or out.
// og.mu is held.
func (og *orderedGroup) queue(ev *orderedEvent) {
	q := og.queues[ev.key]
	first := 0
	if len(q) > 0 && (!og.catchingUp || q[0].holder != nil) {
		first = 1
	}
	i := len(q)
	for i > first && q[i-1].seq > ev.seq {
		i--
	}
	og.queues[ev.key] = slices.Insert(q, i, ev)
	if len(q) == 0 && !og.catchingUp {
		og.ready = append(og.ready, ev)
	}
}

// pinned starts catching up: the reader was given a new pin.
func (og *orderedGroup) pinned(ctx context.Context) {
	og.mu.Lock()
	was := og.catchingUp
	og.catchingUp = true
	og.mu.Unlock()
	if !was {
		go og.catchUp(ctx)
	}
}

// catchUp waits until every record pending in the group is held by the reader (the others came
// back) or an ack wait has passed, then readies the head of each IM group, in log order.
func (og *orderedGroup) catchUp(ctx context.Context) {
	r := og.reader
	deadline := time.Now().Add(r.logAckWait + time.Second)
	wait := 5 * time.Millisecond
	for {
		// The consumer's info counts the records delivered and not acked: those held here, and
		// those on their way back.
		c, err := og.s.log.JetStream().Consumer(ctx, og.s.log.Stream(), og.name)
		if err == nil {
			r.mu.Lock()
			here := len(r.records)
			r.mu.Unlock()
			if c.CachedInfo().NumAckPending <= here {
				break
			}
		}
		if time.Now().After(deadline) {
			og.s.logger.Warn("ordered group: records held before this instance was pinned did not come back within the ack wait; going on",
				"group", og.name, "err", err)
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
	og.mu.Lock()
	defer og.mu.Unlock()
	og.catchingUp = false
	heads := og.held
	og.held = nil
	for _, q := range og.queues {
		if q[0].holder == nil && !slices.Contains(og.ready, q[0]) {
			heads = append(heads, q[0])
		}
	}
	slices.SortFunc(heads, func(a, b *orderedEvent) int { return cmp.Compare(a.seq, b.seq) })
	og.ready = append(og.ready, heads...)
	og.broadcast()
}

// next waits until an event is ready and m has room for it, and gives it to m. An event delivered
// max_deliveries times already is returned as owed to the dead letters instead (m does not hold it).
// It returns nil when ctx ends, or with the error that stopped the reader.
func (og *orderedGroup) next(ctx context.Context, m *member) (ev *orderedEvent, dead bool, err error) {
	for {
		og.mu.Lock()
		if og.err != nil {
			og.mu.Unlock()
			return nil, false, og.err
		}
		if len(og.ready) > 0 && !og.catchingUp {
			ev = og.ready[0]
			if ev.deliveries >= og.maxDeliveries {
				og.ready = og.ready[1:]
				og.mu.Unlock()
				return ev, true, nil
			}
			if m.ordOut < m.max {
				og.ready[0] = nil
				og.ready = og.ready[1:]
				ev.deliveries++
				ev.holder = m
				m.ordOut++
				og.mu.Unlock()
				return ev, false, nil
			}
		}
		wake := og.wake
		og.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, false, nil
		}
	}
}

// settle takes ids out of what m holds: acked (n == nil), the next event of each one's IM group is
// ready, and the event is settled in the reader's record; nacked, it is ready again first (after
// n.delay, unless it is owed to the dead letters).
func (og *orderedGroup) settle(m *member, ids []string, n *nackInfo) {
	acked := ids[:0:0]
	og.mu.Lock()
	for _, id := range ids {
		ev := og.byID[id]
		if ev == nil || ev.holder != m {
			continue // not out to m: settled already, or handed back
		}
		ev.holder = nil
		m.ordOut--
		if n == nil {
			og.done(ev)
			acked = append(acked, id)
			continue
		}
		ev.reason = n.reason
		m.gm.nacks.Inc()
		if n.delay > 0 && ev.deliveries < og.maxDeliveries {
			time.AfterFunc(n.delay, func() { og.readyFirst(ev) })
			continue
		}
		og.ready = append([]*orderedEvent{ev}, og.ready...)
	}
	og.broadcast()
	og.mu.Unlock()
	if len(acked) > 0 {
		og.reader.ack(nil, acked...)
	}
}

// readyFirst makes ev, nacked with a delay, ready before the others.
func (og *orderedGroup) readyFirst(ev *orderedEvent) {
	og.mu.Lock()
	defer og.mu.Unlock()
	if og.byID[ev.id] == ev && ev.holder == nil && !slices.Contains(og.ready, ev) {
		og.ready = append([]*orderedEvent{ev}, og.ready...)
		og.broadcast()
	}
}

// done forgets ev, settled, and readies the next event of its IM group. og.mu is held.
func (og *orderedGroup) done(ev *orderedEvent) {
	delete(og.byID, ev.id)
	if ev.key == "" {
		return
	}
	q := og.queues[ev.key]
	if len(q) == 0 || q[0] != ev {
		return // not held as the head of its IM group: nothing waits on it
	}
	q[0] = nil
	q = q[1:]
	if len(q) == 0 {
		delete(og.queues, ev.key)
		return
	}
	og.queues[ev.key] = q
	og.ready = append(og.ready, q[0])
}

// handBack takes back what m holds (it left): those events go out again first, in log order.
func (og *orderedGroup) handBack(m *member) {
	og.mu.Lock()
	defer og.mu.Unlock()
	var back []*orderedEvent
	for _, ev := range og.byID {
		if ev.holder == m {
			ev.holder = nil
			back = append(back, ev)
		}
	}
	m.ordOut = 0
	if len(back) == 0 {
		return
	}
	slices.SortFunc(back, func(a, b *orderedEvent) int { return cmp.Compare(a.seq, b.seq) })
	og.ready = append(back, og.ready...)
	og.broadcast()
}

// ackHeld acks what m holds: m can no longer ack (goReadOnly).
func (og *orderedGroup) ackHeld(m *member) {
	og.mu.Lock()
	var ids []string
	for id, ev := range og.byID {
		if ev.holder == m {
			ids = append(ids, id)
		}
	}
	og.mu.Unlock()
	og.settle(m, ids, nil)
}

// deadLetter moves ev, delivered max_deliveries times, to the dead letters, and its IM group on.
// When that fails, ev is tried again a second later.
func (og *orderedGroup) deadLetter(ev *orderedEvent) {
	s := og.s
	msg := og.reader.heldMsg(ev.id)
	var err error
	if msg != nil {
		var md *nats.MsgMetadata
		if md, err = msg.Metadata(); err == nil {
			err = s.deadLetter(og.name, msg.Subject, md, uint64(ev.deliveries), []outgoing{ev.outgoing}, ev.reason)
		}
	}
	if err != nil {
		s.logger.Warn("dead letter not stored: tried again", "group", og.name, "event", ev.id, "err", err)
		time.AfterFunc(time.Second, func() { og.readyFirst(ev) })
		return
	}
	og.mu.Lock()
	og.done(ev)
	og.broadcast()
	og.mu.Unlock()
	if msg == nil {
		return // the reader let go of its record (it is stopping): the record comes back
	}
	og.reader.ack(nil, ev.id)
	og.reader.gm.deadLetters.Inc()
	s.logger.Warn("event dead-lettered", "group", og.name, "seq", ev.seq, "event", ev.id, "deliveries", ev.deliveries, "reason", ev.reason)
}

// serveOrdered sends m the events its ordered group gives it, until ctx ends or the reader fails.
func (m *member) serveOrdered(ctx context.Context) error {
	og := m.ordered
	for {
		ev, dead, err := og.next(ctx, m)
		if ev == nil {
			return err
		}
		if dead {
			og.deadLetter(ev)
			continue
		}
		m.gm.deliveries.Inc()
		if ev.deliveries > 1 {
			m.gm.redeliveries.Inc()
		}
		span := m.s.deliverSpan(ev.trace, m.sub.Group, ev.id, uint64(ev.deliveries))
		err = m.stream.SendMsg(ev.response)
		endSpan(span, err)
		if err != nil {
			return err
		}
		m.mu.Lock()
		readOnly := m.readOnly
		m.mu.Unlock()
		if readOnly {
			og.settle(m, []string{ev.id}, nil)
		}
	}
}

// heldMsg is the latest delivery of the record holding event id, nil if this member holds none.
func (m *member) heldMsg(id string) *nats.Msg {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec := m.pending[id]; rec != nil {
		return rec.msg
	}
	return nil
}

// unpin lets another instance read the group at once, if this reader holds the pin.
func (m *member) unpin() {
	if m.pinID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainWait)
	defer cancel()
	stream, err := m.s.log.JetStream().Stream(ctx, m.s.log.Stream())
	if err == nil {
		err = stream.UnpinConsumer(ctx, m.sub.Group, pinGroup)
	}
	if err != nil {
		m.s.logger.Warn("ordered group not unpinned: other instances take over when the pin times out", "group", m.sub.Group, "after", pinnedTTL, "err", err)
	}
}

// orderKey is the IM group an event is about, for ordering: the typed payload's group id, else the
// raw body's top-level groupID (OpenIM) or GroupId (Tencent); "" for none.
func orderKey(ev *pb.Event) string {
	if id := groupID(ev); id != "" {
		return id
	}
	if ev.Kind != pb.EventKind_EVENT_KIND_RAW || len(ev.RawBody) == 0 {
		return ""
	}
	var body struct {
		GroupID json.RawMessage `json:"groupID"` // encoding/json matches GroupId too (case-insensitive)
	}
	if json.Unmarshal(ev.RawBody, &body) != nil {
		return ""
	}
	var id string
	if json.Unmarshal(body.GroupID, &id) != nil {
		return ""
	}
	return id
}
