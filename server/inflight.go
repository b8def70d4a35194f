package server

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// record is one delivered log message and its events not yet acked. The message is acked to the log
// when none is left; while some are, each ack pushes the log's ack deadline back (InProgress), so a
// record of many events is not delivered again merely for taking long to work through. A record with
// nacked events goes back to the group once every event is settled, and one still held when the
// member leaves goes back at once; either way, what the group already acked of it is written down
// first (redelivery.go), so that only the rest is delivered again.
type record struct {
	msg      *nats.Msg // the latest delivery
	seq      uint64
	size     int            // of the log message
	sent     time.Time      // the latest delivery; guarded by member.mu
	unacked  map[string]int // each event not acked yet: its index in the record; guarded by member.mu
	progress time.Time      // last InProgress; guarded by member.mu
	touched  time.Time      // last ack or nack of one of its events; guarded by member.mu

	// What the group did with the record's other events; guarded by member.mu. Acks are not
	// listed as they come (that would cost an append per ack): ackedIDs works them out.
	ids       []string      // the events this member holds of it, when more than one
	prior     []string      // ids acked before (as the redelivery entry says)
	nackedIDs []string      // events nacked here
	reason    string        // the last nack's
	delay     time.Duration // the longest nack delay
	changed   bool          // acked or nacked since the entry was read
	kept      bool          // a redelivery entry exists
}

// ackedIDs lists the record's events the group acked: before, and here (held, neither unacked nor
// nacked). The record is the caller's alone, or member.mu is held.
func (rec *record) ackedIDs() []string {
	acked := slices.Clone(rec.prior)
	for _, id := range rec.ids {
		if _, ok := rec.unacked[id]; !ok && !slices.Contains(rec.nackedIDs, id) {
			acked = append(acked, id)
		}
	}
	return acked
}

// handle delivers the events of one fetched log message. A record delivered again to this member
// (its ack wait passed) keeps what was acked already: only the rest is sent again; one delivered
// again after another member let go of it skips what the group acked (redelivery.go). A record
// delivered more than max_deliveries times is dead-lettered instead (deadletter.go).
//
// The message is outside input (validate.go). One that is not a record is terminated, so the log
// never delivers it again; events of a record that cannot be read are left out and the others
// delivered. An event whose id is already held by this member (a copy: ids are unique) is delivered
// once, so that one ack settles it.
func (m *member) handle(ctx context.Context, msg *nats.Msg) error {
	if ctx.Err() != nil {
		nak(msg)
		return nil
	}
	md, err := msg.Metadata()
	if err != nil || !fromLog(msg) {
		// Not from the log (its reply subject is no JetStream ack subject): nothing to deliver, and
		// nowhere to ack. Only a client that may publish on the bridge's inboxes could send it.
		m.s.metrics.rejected.WithLabelValues(rejectRecord).Inc()
		m.s.logger.Warn("message on a group's pull subscription that is not from the event log: ignored", "group", m.sub.Group, "subject", msg.Subject)
		return nil
	}
	if to := msg.Header.Get(groupHeader); to != "" && to != m.sub.Group {
		m.ackLog(msg) // redriven for another group
		return nil
	}
	seq, delivered := md.Sequence.Stream, md.NumDelivered
	evs, bad, err := m.events(msg.Header, msg.Data, seq)
	if (err != nil || bad > 0) && delivered <= 1 {
		m.s.unreadable(m.sub.Group, msg.Subject, seq, bad, err)
	}
	if err != nil || len(evs) == 0 && bad > 0 {
		term(msg, "imbridge: unreadable record")
		return nil
	}
	m.mu.Lock()
	m.recordSize = 0.8*m.recordSize + 0.2*float64(max(len(evs), 1))
	m.recordBytes = 0.8*m.recordBytes + 0.2*float64(msg.Size())
	rec := m.records[seq]
	m.mu.Unlock()
	// The redelivery entry is read without the lock. Only this goroutine adds records, but the
	// receive goroutine may let go of the one held meanwhile (it was settled): then look again, the
	// record not held any more and its entry, if one was just written, read.
	var st recordState
	kept := false
	for {
		if rec == nil && delivered > 1 {
			m.mu.Lock()
			leaving := m.leaving[seq]
			m.mu.Unlock()
			if leaving != nil {
				<-leaving // the receive goroutine is writing the record's entry: read it once written
			}
			st, kept = m.s.loadState(m.sub.Group, seq)
		}
		m.mu.Lock()
		if now := m.records[seq]; now != rec {
			rec = now
			m.mu.Unlock()
			continue
		}
		break
	}
	// m.mu is held.
	if delivered > uint64(m.maxDeliveries) {
		owed, reason, kept := m.owed(rec, evs, st, kept)
		m.mu.Unlock()
		m.giveUp(msg, md, owed, rec, reason, kept)
		return nil
	}
	if rec == nil {
		rec = &record{seq: seq, unacked: make(map[string]int, len(evs)), prior: st.Acked, reason: st.Reason, kept: kept}
		for i, ev := range evs {
			if kept && slices.Contains(st.Acked, ev.id) {
				continue
			}
			if _, held := m.pending[ev.id]; held {
				m.s.metrics.rejected.WithLabelValues(rejectDuplicate).Inc()
				continue
			}
			rec.unacked[ev.id] = i
			m.pending[ev.id] = rec
		}
		if len(rec.unacked) > 1 {
			rec.ids = make([]string, 0, len(rec.unacked))
			for id := range rec.unacked {
				rec.ids = append(rec.ids, id)
			}
		}
		if len(rec.unacked) > 0 {
			rec.size = len(msg.Data) // and a few short headers
			m.records[seq] = rec
			m.heldBytes += rec.size
		}
	}
	rec.msg = msg
	rec.sent = time.Now()
	send := evs[:0]
	for i, ev := range evs {
		if j, ok := rec.unacked[ev.id]; ok && j == i {
			send = append(send, ev)
		}
	}
	readOnly := m.readOnly
	m.mu.Unlock()
	if len(send) == 0 {
		// Nothing this group wants (the subject filter is coarse), or all of it acked before.
		m.ackLog(msg)
		if kept {
			m.s.forgetState(m.sub.Group, seq)
		}
		return nil
	}
	if m.dispatch != nil {
		m.dispatch.add(send, delivered) // an ordered group's members count their deliveries
		return nil
	}
	m.gm.deliveries.Add(float64(len(send)))
	if delivered > 1 {
		m.gm.redeliveries.Add(float64(len(send)))
	}
	for _, ev := range send {
		span := m.s.deliverSpan(ev.trace, m.sub.Group, ev.id, delivered)
		err := m.stream.SendMsg(ev.response)
		endSpan(span, err)
		if err != nil {
			return err
		}
		if readOnly {
			m.ack(nil, ev.id)
		}
	}
	return nil
}

// term tells the log never to deliver msg to this group again; the reason goes into the log's
// MSG_TERMINATED advisory.
func term(msg *nats.Msg, reason string) {
	_ = msg.Respond([]byte("+TERM " + reason))
}

// outgoing is one event to send.
type outgoing struct {
	id       string
	raw      []byte // the Event as stored
	response any    // *pb.SubscribeResponse or preEncoded
	size     int    // as stored
	seq      uint64
	trace    map[string]string // the callback's trace context, when tracing
	key      string            // its IM group, for an ordered group's reader
}

// events returns the events of a log message (its header, payload and stream sequence) this member
// wants, ready to send, and how many of its events could not be read. An error means the message
// is not a record at all.
func (m *member) events(hdr nats.Header, data []byte, seq uint64) (out []outgoing, bad int, err error) {
	raw, err := recordEvents(hdr, data)
	if err != nil {
		return nil, 0, err
	}
	out = make([]outgoing, 0, len(raw))
	for _, b := range raw {
		if m.exact {
			id, ok := checkEvent(b)
			if !ok {
				bad++
				continue
			}
			o := outgoing{id: id, response: eventResponse(b, seq), size: len(b), seq: seq}
			if m.s.tracer != nil {
				o.trace = eventTraceContext(b)
			}
			if m.sub.Group != "" {
				o.raw = b // for a dead letter
			}
			out = append(out, o)
			continue
		}
		ev := new(pb.Event)
		if proto.Unmarshal(b, ev) != nil || !deliverable(ev) {
			bad++
			continue
		}
		if matches(m.sub.GetFilter(), ev) {
			ev.Sequence = seq
			o := outgoing{id: ev.Id, response: &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Event{Event: ev}}, size: len(b), seq: seq, trace: ev.TraceContext}
			if m.dispatch != nil {
				o.key = orderKey(ev)
			}
			if m.sub.Group != "" {
				o.raw = b // for a dead letter
			}
			out = append(out, o)
		}
	}
	return out, bad, nil
}

// unreadable reports a log message not delivered whole to group ("": the live tails): err when it
// is not a record, else the number of its events left out.
func (s *Server) unreadable(group, subject string, seq uint64, bad int, err error) {
	if err != nil {
		s.metrics.rejected.WithLabelValues(rejectRecord).Inc()
		s.logger.Error("unreadable record in the event log: not delivered", "group", group, "seq", seq, "subject", subject, "err", err)
		return
	}
	s.metrics.rejected.WithLabelValues(rejectEvent).Add(float64(bad))
	s.logger.Error("unreadable events in an event log record: not delivered", "group", group, "seq", seq, "subject", subject, "events", bad)
}

// ackLog acks a log message the member is done with; its group's floor moved (groupstate.go).
func (m *member) ackLog(msg *nats.Msg) {
	_ = msg.Ack()
	m.s.groups.acked(m.sub.Group)
}

// waitFree blocks until the member has a free slot and holds less than maxBytes, and returns how
// many slots and bytes it has free; 0 slots when ctx ends, or, for a pinned reader, after
// pinKeepAlive without room.
func (m *member) waitFree(ctx context.Context) (slots, bytes int) {
	var keepPin <-chan time.Time // a pinned reader's: it pulls now and then to keep its pin
	if m.pinned {
		t := time.NewTimer(pinKeepAlive)
		defer t.Stop()
		keepPin = t.C
	}
	for ctx.Err() == nil {
		m.mu.Lock()
		slots, bytes = m.max-len(m.pending), m.maxBytes-m.heldBytes
		m.mu.Unlock()
		if slots > 0 && bytes > 0 {
			return slots, bytes
		}
		select {
		case <-m.freed:
		case <-ctx.Done():
		case <-keepPin:
			return 0, 0
		}
	}
	return 0, 0
}

// ack settles delivered events: it sends the verdict, if any, to the callback waiting for each, and
// acks a log message once all its events are settled. A decider's plain ack counts as an allow. Ids
// not pending (acked already, or never delivered to this member) are ignored.
func (m *member) ack(v *pb.Verdict, ids ...string) {
	if m.ordered != nil {
		m.ordered.settle(m, ids, nil) // an ordered group does not decide
		return
	}
	var outBuf [1]settled
	var doneBuf [1]*record
	out, done := m.settle(ids, nil, outBuf[:0], doneBuf[:0])
	if len(out) == 0 {
		return
	}
	if v == nil {
		v = allowVerdict
	}
	m.gm.acks.Add(float64(len(out)))
	if m.sub.Decide {
		m.s.metrics.verdicts.WithLabelValues(m.sub.Group, decisionLabel(v)).Add(float64(len(out)))
	}
	now := time.Now()
	for _, st := range out {
		m.gm.ackDur.Observe(now.Sub(st.sent).Seconds())
		// Events waiting for a verdict are stored alone, so the header is theirs.
		if to := st.msg.Header.Get(verdictToHeader); to != "" && m.sub.Decide {
			if !verdictSubjectOf(to, st.id) {
				m.s.metrics.rejected.WithLabelValues(rejectVerdictTo).Inc()
				m.s.logger.Warn("event names a verdict subject that is not a bridge's: verdict not sent", "event", st.id, "to", to)
			} else if err := m.s.verdicts.send(m.s.log.AnswerConn(), to, m.sub.Group, v); err != nil {
				m.s.logger.Warn("verdict not sent", "event", st.id, "err", err)
			}
		}
		if st.progress {
			_ = st.msg.InProgress()
		}
	}
	for _, rec := range done {
		m.letGo(rec)
	}
}

// nack settles delivered events the subscriber could not handle: their records go back to the group
// (after delay) once the rest of each is settled, and come back with only the events not acked.
func (m *member) nack(reason string, delay time.Duration, ids ...string) {
	if m.ordered != nil {
		m.ordered.settle(m, ids, &nackInfo{reason: reason, delay: delay})
		return
	}
	out, done := m.settle(ids, &nackInfo{reason: reason, delay: delay}, nil, nil)
	if len(out) == 0 {
		return
	}
	m.gm.nacks.Add(float64(len(out)))
	for _, st := range out {
		if st.progress {
			_ = st.msg.InProgress()
		}
	}
	for _, rec := range done {
		m.letGo(rec)
	}
}

type nackInfo struct {
	reason string
	delay  time.Duration
}

// settled is one event settled by an ack or a nack.
type settled struct {
	msg      *nats.Msg
	id       string
	progress bool // tell the log the record is being worked on
	sent     time.Time
}

// settle takes ids out of the member's pending events, acked, or nacked with n. It appends to out
// the events it settled and to done the records with nothing left to settle, which the caller lets
// go of.
func (m *member) settle(ids []string, n *nackInfo, out []settled, done []*record) ([]settled, []*record) {
	var now time.Time
	m.mu.Lock()
	for _, id := range ids {
		rec, ok := m.pending[id]
		if !ok {
			continue
		}
		delete(m.pending, id)
		delete(rec.unacked, id)
		if n != nil {
			rec.nackedIDs = append(rec.nackedIDs, id)
			rec.reason = n.reason
			rec.delay = max(rec.delay, n.delay)
			rec.changed = true
		} else if len(rec.unacked) > 0 || len(rec.nackedIDs) > 0 {
			rec.changed = true // the record may go back: the ack is to be written down
		}
		st := settled{msg: rec.msg, id: id, sent: rec.sent}
		if len(rec.unacked) == 0 {
			delete(m.records, rec.seq)
			m.heldBytes -= rec.size
			done = append(done, rec)
			if len(rec.nackedIDs) > 0 {
				// Going back to the group (letGo): handle, getting it again meanwhile, waits for
				// its entry to be written.
				m.leaving[rec.seq] = make(chan struct{})
			}
		} else {
			if now.IsZero() {
				now = time.Now()
			}
			rec.touched = now
			if now.Sub(rec.progress) > m.logAckWait/3 {
				rec.progress, st.progress = now, true
			}
		}
		out = append(out, st)
	}
	m.mu.Unlock()
	if len(out) > 0 {
		select {
		case m.freed <- struct{}{}:
		default:
		}
	}
	return out, done
}

// letGo ends this member's hold on a record it no longer holds events of: acked whole, it is acked
// to the log; otherwise it goes back to the group, after what the group did with it is written down.
// The record is the caller's alone (no longer in m.records).
func (m *member) letGo(rec *record) {
	defer func() {
		m.mu.Lock()
		if ch := m.leaving[rec.seq]; ch != nil {
			close(ch)
			delete(m.leaving, rec.seq)
		}
		m.mu.Unlock()
	}()
	if len(rec.nackedIDs) == 0 && len(rec.unacked) == 0 {
		m.ackLog(rec.msg)
		if rec.kept {
			m.s.forgetState(m.sub.Group, rec.seq)
		}
		return
	}
	if rec.changed && !m.keepFailed.Load() {
		if err := m.s.keepState(m.sub.Group, rec.seq, recordState{Acked: rec.ackedIDs(), Reason: rec.reason}); err != nil {
			// The record comes back whole: its acked events are delivered again (at least once).
			// So do the others being let go of now: a log that did not take this entry within
			// stateTimeout would make a member leaving with many records wait that long for each.
			m.keepFailed.Store(m.releasing.Load()) // only a release gives up on the rest
			m.s.logger.Warn("redelivery entry not written: the record comes back whole", "group", m.sub.Group, "seq", rec.seq, "err", err)
		}
	}
	if len(rec.nackedIDs) > 0 && rec.delay > 0 {
		_ = rec.msg.NakWithDelay(rec.delay)
	} else {
		_ = rec.msg.Nak()
	}
}

// keepHeld tells the log, every third of its ack wait, that the records this member holds are
// being worked on, until the group's ack wait has passed since each was delivered or one of its
// events settled; an ordered group's reader, for as long as it holds them (their events wait their
// turn). So a record held by an instance that dies comes back after the log's ack wait (the
// failover wait), and one held by a live member after the group's. It returns the function that
// stops it.
func (m *member) keepHeld(ctx context.Context) (stop func()) {
	if m.dispatch == nil && m.logAckWait >= m.ackWait {
		return func() {} // the log's ack wait is the group's
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		every := max(m.logAckWait/3, 10*time.Millisecond)
		t := time.NewTicker(every)
		defer t.Stop()
		var msgs []*nats.Msg
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				msgs = m.dueInProgress(now, every, msgs[:0])
				for _, msg := range msgs {
					_ = msg.InProgress()
				}
				clear(msgs)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// dueInProgress appends to msgs the records to tell the log about now: held, their log ack wait a
// third gone, and their group's ack wait not passed before the log's would.
func (m *member) dueInProgress(now time.Time, every time.Duration, msgs []*nats.Msg) []*nats.Msg {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, rec := range m.records {
		since := latest(rec.sent, rec.progress) // the log's ack wait runs from it
		if now.Sub(since) < every {
			continue
		}
		if m.dispatch == nil && !since.Add(m.logAckWait).Before(latest(rec.sent, rec.touched).Add(m.ackWait)) {
			continue // the log delivers it again when the group's ack wait has passed
		}
		rec.progress = now
		msgs = append(msgs, rec.msg)
	}
	return msgs
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// release hands the records this member still holds back to its group at once, rather than after
// the ack wait. Their events acked already are not delivered again (letGo).
func (m *member) release() {
	m.mu.Lock()
	recs := make([]*record, 0, len(m.records))
	for _, rec := range m.records {
		recs = append(recs, rec)
	}
	clear(m.records)
	clear(m.pending)
	m.heldBytes = 0
	m.mu.Unlock()
	m.releasing.Store(true)
	// In log order: the log delivers what is handed back in the order it came back.
	slices.SortFunc(recs, func(a, b *record) int { return cmp.Compare(a.seq, b.seq) })
	for _, rec := range recs {
		m.letGo(rec)
	}
	m.releasing.Store(false)
	m.keepFailed.Store(false)
}
