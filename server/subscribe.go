package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/imbridge/imbridge/auth"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// MaxInFlight caps Subscription.max_in_flight: a member's unacked events are held in memory.
const MaxInFlight = 10000

// Subscribe streams events to one subscriber. A group is a durable JetStream consumer shared by its
// members; a subscription without a group is an ordered, ephemeral consumer of new events.
func (s *Server) Subscribe(stream pb.EventService_SubscribeServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	sub := first.GetSubscription()
	if err := validateSubscription(sub); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err := auth.AllowSubscription(stream.Context(), sub); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.stopCtx, cancel)()

	m := &member{s: s, stream: stream, pending: map[string]*record{}, records: map[uint64]*record{}, recordSize: 1, freed: make(chan struct{}, 1), maxBytes: s.maxUnackedBytes}
	var tailMsgs jetstream.MessagesContext // a live tail's; groups fetch instead
	if sub.Group == "" {
		c, err := s.log.JetStream().OrderedConsumer(ctx, s.log.Stream(), jetstream.OrderedConsumerConfig{
			FilterSubjects: nonCatchAll(filterSubjects(sub.GetFilter())),
			DeliverPolicy:  jetstream.DeliverNewPolicy,
		})
		if err != nil {
			return status.Errorf(codes.Unavailable, "live tail: %v", err)
		}
		it, err := c.Messages()
		if err != nil {
			return status.Errorf(codes.Unavailable, "live tail: %v", err)
		}
		defer it.Stop()
		defer context.AfterFunc(ctx, it.Stop)()
		tailMsgs = it
		m.sub = sub
	} else {
		var leave func()
		m.sub, leave, err = s.joinGroup(ctx, sub)
		if err != nil {
			return err
		}
		defer leave()
		m.ackWait = ackWaitOf(m.sub)
		m.max = int(sub.GetMaxInFlight())
		if m.max <= 0 {
			m.max = DefaultMaxInFlight
		}
	}
	m.exact = subjectExact(m.sub.GetFilter())
	m.gm = s.metrics.forGroup(sub.Group)
	subscribers := s.metrics.subscribers.WithLabelValues(sub.Group)
	subscribers.Inc()
	defer subscribers.Dec()
	if m.sub.Decide {
		m.undecide = sync.OnceFunc(s.deciders.add(sub.Group, m.sub.GetFilter()))
		defer m.undecide()
	}
	if err := stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Subscribed{
		Subscribed: &pb.Subscribed{Group: sub.Group, Decide: m.sub.Decide},
	}}); err != nil {
		return err
	}
	m.who = "(no token)"
	if p := auth.FromContext(stream.Context()); p != nil {
		m.who = p.Name
	}
	s.logger.Info("subscriber joined", "group", sub.Group, "decide", m.sub.Decide, "subscriber", m.who)
	defer s.logger.Info("subscriber left", "group", sub.Group)

	recvDone := make(chan error, 1)
	go func() {
		err := m.receive(ctx)
		recvDone <- err // before cancel: the handler, woken by it, returns this error
		if err != nil {
			cancel()
		}
	}()
	if tailMsgs != nil {
		err = m.tail(ctx, tailMsgs)
	} else {
		err = m.fetch(ctx)
		m.release()
	}
	cancel()
	if err != nil {
		return err
	}
	// The receive goroutine ends when this handler returns (Recv fails then); it is not waited for.
	// An ack it takes after release() finds nothing pending.
	select {
	case recvErr := <-recvDone:
		if recvErr != nil {
			return recvErr
		}
	default:
	}
	if s.stopCtx.Err() != nil {
		return status.Error(codes.Unavailable, "bridge shutting down")
	}
	return nil
}

// enter counts a subscriber in, unless the server is closing or serves its most subscribers.
func (s *Server) enter() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closing {
		return status.Error(codes.Unavailable, "bridge shutting down")
	}
	if s.nsubs >= s.maxSubs {
		return status.Errorf(codes.ResourceExhausted, "the bridge serves %d subscribers, its most (--max-subscribers): try again later or another instance", s.nsubs)
	}
	s.nsubs++
	s.subs.Add(1)
	return nil
}

// leave counts a subscriber out.
func (s *Server) leave() {
	s.closeMu.Lock()
	s.nsubs--
	s.closeMu.Unlock()
	s.subs.Done()
}

func nonCatchAll(subjects []string) []string {
	if subjects[0] == allSubjects {
		return nil
	}
	return subjects
}

// member is one connected subscriber.
type member struct {
	s        *Server
	sub      *pb.Subscription // the group's settings for a group member
	stream   pb.EventService_SubscribeServer
	max      int           // most unacked events held
	maxBytes int           // most unacked bytes held (Options.MaxUnackedBytes)
	undecide func()        // removes this member from the deciders; nil if not one
	freed    chan struct{} // signalled when an ack frees a slot
	exact    bool          // the subject filter is exact: events are sent as stored (codec.go)
	who      string        // the subscriber's name, for the log
	gm       groupMetrics

	mu       sync.Mutex
	pending  map[string]*record // delivered, not yet acked, by event id; guarded by mu
	records  map[uint64]*record // the same records by stream sequence; guarded by mu
	readOnly bool               // the subscriber closed its side: it cannot ack; guarded by mu
	// heldBytes is the size of the log messages in records; guarded by mu.
	heldBytes int
	// recordSize is the recent average of events per record, to size fetches; guarded by mu.
	recordSize float64
	ackWait    time.Duration // the group's
}

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

// fetch pulls as many events as the member has free slots, never more, so that a busy member does
// not hold events an idle one could take.
//
// It pulls on a subscription of its own rather than with jetstream's Fetch, for the member's way
// out. A member leaving while a pull request is waiting at the log must hand its records back only
// once the log can no longer deliver to that request: Fetch drops its subscription only after it
// has ended the batch, so a record handed back at once could go straight to the dead request and
// wait out the ack wait. Here the subscription is drained before anything is handed back.
func (m *member) fetch(ctx context.Context) error {
	nc := m.s.log.Conn()
	// One request is waiting at a time, for at most m.max records; the rest is room for heartbeats.
	msgs := make(chan *nats.Msg, m.max+pullSlack)
	sub, err := nc.ChanSubscribe(nc.NewInbox(), msgs)
	if err != nil {
		return status.Errorf(codes.Unavailable, "consumer group %s: %v", m.sub.Group, err)
	}
	defer m.drain(sub, msgs)
	next := jetstream.DefaultAPIPrefix + "CONSUMER.MSG.NEXT." + m.s.log.Stream() + "." + m.sub.Group
	whole := false // the next record is larger than what is free: take it alone
	for {
		free, freeBytes := m.waitFree(ctx)
		if free == 0 {
			return nil // ctx ended
		}
		// Records hold one event under light load and up to maxRecordEvents under heavy load: ask
		// for as many records as fit at the recent average size, and at least one. A burst of records
		// larger than the average can take the member past max_in_flight.
		m.mu.Lock()
		n := max(1, int(float64(free)/m.recordSize))
		m.mu.Unlock()
		// The log ends the request before a record that would pass maxBytes. That record is then
		// taken alone, so that a large record is not held back by small ones: a member holds at most
		// one record past maxBytes.
		maxBytes := freeBytes
		if whole {
			n, maxBytes = 1, 0 // one record, whatever its size
		}
		got, tooBig, err := m.pull(ctx, nc, next, sub.Subject, msgs, n, maxBytes)
		if err != nil || ctx.Err() != nil {
			return err
		}
		whole = got == 0 && tooBig
	}
}

// A pull request waits at most pullExpires for records; while it waits, the log sends a heartbeat
// every pullHeartbeat, and two missed heartbeats end the subscription.
const (
	pullExpires   = 30 * time.Second
	pullHeartbeat = 5 * time.Second
	pullSlack     = 16
	// drainWait bounds how long a leaving member waits for the log to confirm its unsubscribe
	// (normally one round trip to the log).
	drainWait = time.Second
)

// pull sends one pull request for n records of at most maxBytes in all and delivers them as they
// come, until n have come, the log ends the request (it expired, or the next record would pass
// maxBytes: tooBig) or ctx ends. It returns how many records came.
func (m *member) pull(ctx context.Context, nc *nats.Conn, next, inbox string, msgs <-chan *nats.Msg, n, maxBytes int) (got int, tooBig bool, err error) {
	req := fmt.Appendf(nil, `{"batch":%d,"expires":%d,"idle_heartbeat":%d}`, n, pullExpires, pullHeartbeat)
	if maxBytes > 0 {
		req = fmt.Appendf(nil, `{"batch":%d,"max_bytes":%d,"expires":%d,"idle_heartbeat":%d}`, n, maxBytes, pullExpires, pullHeartbeat)
	}
	// A record that uses the request's max_bytes up exactly ends it with no status at all: the
	// bytes left are counted here as the log counts them (Msg.Size: subject, reply, headers, data).
	left := maxBytes
	if err := nc.PublishRequest(next, inbox, req); err != nil {
		return 0, false, status.Errorf(codes.Unavailable, "consumer group %s: %v", m.sub.Group, err)
	}
	idle := time.NewTimer(2 * pullHeartbeat)
	defer idle.Stop()
	for got < n {
		select {
		case <-ctx.Done():
			return got, false, nil
		case <-idle.C:
			return got, false, status.Errorf(codes.Unavailable, "consumer group %s: no heartbeat from the event log", m.sub.Group)
		case msg := <-msgs:
			if code, ok := pullStatus(msg); ok {
				if ended, err := m.pullEnded(code, msg.Header); ended {
					return got, code == "409" && msg.Header.Get("Description") == pullTooBig, err
				}
			} else {
				got++
				left -= msg.Size()
				if err := m.handle(ctx, msg); err != nil {
					return got, false, err
				}
				if maxBytes > 0 && left <= 0 {
					return got, false, nil
				}
			}
			idle.Reset(2 * pullHeartbeat)
		}
	}
	return got, false, nil
}

// pullTooBig describes the status that ends a pull request whose next record would pass its
// max_bytes.
const pullTooBig = "Message Size Exceeds MaxBytes"

// pullEnded reads a status from the log: whether it ends the pull request, and the error, if any,
// that ends the subscription with it.
func (m *member) pullEnded(code string, hdr nats.Header) (bool, error) {
	why := hdr.Get("Description")
	switch {
	case code == "100": // idle heartbeat
		return false, nil
	case code == "404", code == "408": // no more records for this request
		return true, nil
	case code == "409" && why == pullTooBig: // the next record would pass the request's max_bytes
		return true, nil
	case code == "409" && why == "Batch Completed":
		// Sent after the last record of a request whose max_bytes were not used up: that request
		// ended here when its last record came, and this status may reach the next one.
		return false, nil
	case code == "409" && why == "Leadership Change":
		return true, nil
	case code == "503": // no responders
		why = "the consumer is gone from the event log"
	}
	return true, status.Errorf(codes.Unavailable, "consumer group %s: %s %s", m.sub.Group, code, why)
}

// pullStatus reports the status code of a message from the log that carries no record: a heartbeat,
// or the end of a pull request.
func pullStatus(msg *nats.Msg) (string, bool) {
	if len(msg.Data) > 0 || msg.Header == nil {
		return "", false
	}
	code := msg.Header.Get("Status")
	return code, code != ""
}

// drain ends the member's subscription to its pull requests and hands back whatever the log sent on
// it before the log removed the subscription: once the subscription is closed, nothing more can be
// delivered to this member. Should the log be slow to confirm, the member goes on without waiting,
// and what still arrives is handed back as it comes, until the subscription closes or the last pull
// request has expired. (Over an external NATS connection that is reconnecting, the unsubscribe is
// not sent: events the log delivers to the last request then wait out the ack wait.)
func (m *member) drain(sub *nats.Subscription, msgs <-chan *nats.Msg) {
	closed := make(chan struct{})
	var once sync.Once // the handler runs once for a subscription; this keeps close(closed) safe if not
	sub.SetClosedHandler(func(string) { once.Do(func() { close(closed) }) })
	if err := sub.Drain(); err != nil {
		handBack(msgs) // the connection is closed: nothing more comes
		return
	}
	timer := time.NewTimer(drainWait)
	defer timer.Stop()
	select {
	case <-closed:
		handBack(msgs)
	case <-timer.C:
		go func() {
			expired := time.NewTimer(pullExpires)
			defer expired.Stop()
			for {
				select {
				case msg := <-msgs:
					nak(msg)
				case <-closed:
					handBack(msgs)
					return
				case <-expired.C:
					return
				}
			}
		}()
	}
}

// handBack Naks the records waiting in msgs, so that the log delivers them to another member now.
func handBack(msgs <-chan *nats.Msg) {
	for {
		select {
		case msg := <-msgs:
			nak(msg)
		default:
			return
		}
	}
}

// nak hands a pulled record back to the log. Only a record from the log is answered: what arrives
// on a member's inbox is outside input, and a forged message would have its reply subject answered
// with the bridge's permissions.
func nak(msg *nats.Msg) {
	if fromLog(msg) {
		_ = msg.Nak()
	}
}

// fromLog reports whether msg is a record the log delivered: its reply subject is a JetStream ack
// subject (a status message carries none).
func fromLog(msg *nats.Msg) bool {
	return strings.HasPrefix(msg.Reply, jsAckPrefix)
}

// jsAckPrefix starts the reply subject of every record JetStream delivers.
const jsAckPrefix = "$JS.ACK."

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

// receive handles acks and verdicts until the stream ends. When the subscriber closes its side
// (grpcurl -d '{...}' does), it can no longer ack or decide: from then on each event is acked as it
// is sent, and the member stops deciding.
func (m *member) receive(ctx context.Context) error {
	for {
		req, err := m.stream.Recv()
		if errors.Is(err, io.EOF) {
			m.goReadOnly()
			return nil
		}
		if err != nil {
			if ctx.Err() != nil || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		if m.sub.Group == "" {
			continue // a live tail has nothing to ack
		}
		switch r := req.Request.(type) {
		case *pb.SubscribeRequest_Ack:
			m.ack(nil, r.Ack.GetEventId())
			if more := r.Ack.GetMoreEventIds(); len(more) > 0 {
				m.ack(nil, more...)
			}
		case *pb.SubscribeRequest_Verdict:
			if err := m.checkVerdict(r.Verdict); err != nil {
				return err
			}
			m.ack(r.Verdict.GetVerdict(), r.Verdict.GetEventId())
		case *pb.SubscribeRequest_Subscription:
			return status.Error(codes.InvalidArgument, "subscription already set")
		}
	}
}

func (m *member) goReadOnly() {
	if m.undecide != nil {
		m.undecide()
	}
	m.mu.Lock()
	m.readOnly = true
	ids := make([]string, 0, len(m.pending))
	for id := range m.pending {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	m.ack(nil, ids...)
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

// Subscribers is how many Subscribe streams this instance serves.
func (s *Server) Subscribers() int {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	return s.nsubs
}

func decisionLabel(v *pb.Verdict) string {
	if refused(v) {
		return "refuse"
	}
	return "allow"
}
