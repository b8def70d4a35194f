package server

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// record is one delivered log message and its events not yet acked. The message is acked to the log
// when none is left; while some are, each ack pushes the log's ack deadline back (InProgress), so a
// record of many events is not delivered again merely for taking long to work through.
type record struct {
	msg      *nats.Msg // the latest delivery
	seq      uint64
	size     int            // of the log message
	sent     time.Time      // the latest delivery; guarded by member.mu
	unacked  map[string]int // each event not acked yet: its index in the record; guarded by member.mu
	progress time.Time      // last InProgress; guarded by member.mu
}

// handle delivers the events of one fetched log message. A record delivered again to this member
// (its ack wait passed) keeps what was acked already: only the rest is sent again.
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
	seq, delivered := md.Sequence.Stream, md.NumDelivered
	evs, bad, err := m.events(msg.Header, msg.Data, seq)
	if (err != nil || bad > 0) && delivered <= 1 {
		m.unreadable(msg.Subject, seq, bad, err)
	}
	if err != nil || len(evs) == 0 && bad > 0 {
		term(msg, "imbridge: unreadable record")
		return nil
	}
	m.mu.Lock()
	m.recordSize = 0.8*m.recordSize + 0.2*float64(max(len(evs), 1))
	rec := m.records[seq]
	if rec == nil {
		rec = &record{seq: seq, unacked: make(map[string]int, len(evs))}
		for i, ev := range evs {
			if _, held := m.pending[ev.id]; held {
				m.s.metrics.rejected.WithLabelValues(rejectDuplicate).Inc()
				continue
			}
			rec.unacked[ev.id] = i
			m.pending[ev.id] = rec
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
		_ = msg.Ack() // nothing this group wants: the subject filter is coarse
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
	response any // *pb.SubscribeResponse or preEncoded
	size     int // as stored
	seq      uint64
	trace    map[string]string // the callback's trace context, when tracing
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
			out = append(out, outgoing{id: ev.Id, response: &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Event{Event: ev}}, size: len(b), seq: seq, trace: ev.TraceContext})
		}
	}
	return out, bad, nil
}

// unreadable reports a log message this member could not deliver whole: err when it is not a record,
// else the number of its events left out.
func (m *member) unreadable(subject string, seq uint64, bad int, err error) {
	if err != nil {
		m.s.metrics.rejected.WithLabelValues(rejectRecord).Inc()
		m.s.logger.Error("unreadable record in the event log: not delivered", "group", m.sub.Group, "seq", seq, "subject", subject, "err", err)
		return
	}
	m.s.metrics.rejected.WithLabelValues(rejectEvent).Add(float64(bad))
	m.s.logger.Error("unreadable events in an event log record: not delivered", "group", m.sub.Group, "seq", seq, "subject", subject, "events", bad)
}

// waitFree blocks until the member has a free slot and holds less than maxBytes, and returns how
// many slots and bytes it has free; 0 slots when ctx ends.
func (m *member) waitFree(ctx context.Context) (slots, bytes int) {
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
		}
	}
	return 0, 0
}

// ack settles delivered events: it sends the verdict, if any, to the callback waiting for each, and
// acks a log message once all its events are settled. A decider's plain ack counts as an allow. Ids
// not pending (acked already, or never delivered to this member) are ignored.
func (m *member) ack(v *pb.Verdict, ids ...string) {
	type settled struct {
		msg            *nats.Msg
		id             string
		done, progress bool
		sent           time.Time
	}
	var one [1]settled
	out := one[:0]
	var now time.Time
	m.mu.Lock()
	for _, id := range ids {
		rec, ok := m.pending[id]
		if !ok {
			continue
		}
		delete(m.pending, id)
		delete(rec.unacked, id)
		st := settled{msg: rec.msg, id: id, done: len(rec.unacked) == 0, sent: rec.sent}
		if st.done {
			delete(m.records, rec.seq)
			m.heldBytes -= rec.size
		} else {
			if now.IsZero() {
				now = time.Now()
			}
			if now.Sub(rec.progress) > m.ackWait/3 {
				rec.progress, st.progress = now, true
			}
		}
		out = append(out, st)
	}
	m.mu.Unlock()
	if len(out) == 0 {
		return
	}
	select {
	case m.freed <- struct{}{}:
	default:
	}
	if v == nil {
		v = allowVerdict
	}
	m.gm.acks.Add(float64(len(out)))
	if m.sub.Decide {
		m.s.metrics.verdicts.WithLabelValues(m.sub.Group, decisionLabel(v)).Add(float64(len(out)))
	}
	if now.IsZero() {
		now = time.Now()
	}
	for _, st := range out {
		m.gm.ackDur.Observe(now.Sub(st.sent).Seconds())
		// Events waiting for a verdict are stored alone, so the header is theirs.
		if to := st.msg.Header.Get(verdictToHeader); to != "" && m.sub.Decide {
			if !verdictSubjectOf(to, st.id) {
				m.s.metrics.rejected.WithLabelValues(rejectVerdictTo).Inc()
				m.s.logger.Warn("event names a verdict subject that is not a bridge's: verdict not sent", "event", st.id, "to", to)
			} else if err := m.s.verdicts.send(m.s.log.Conn(), to, m.sub.Group, v); err != nil {
				m.s.logger.Warn("verdict not sent", "event", st.id, "err", err)
			}
		}
		switch {
		case st.done:
			_ = st.msg.Ack()
		case st.progress:
			_ = st.msg.InProgress()
		}
	}
}

// release hands the records this member still holds back to its group at once, rather than after
// the ack wait. A record goes back whole: its events acked already are delivered again (at least once).
func (m *member) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for seq, rec := range m.records {
		_ = rec.msg.Nak()
		delete(m.records, seq)
	}
	clear(m.pending)
	m.heldBytes = 0
}
