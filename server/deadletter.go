package server

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imbridge/imbridge/eventlog"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// A group gives up on the events of a record delivered to it more than max_deliveries times: each
// event it still owes becomes a dead letter, a message of the log's dead-letter stream
// (eventlog.DeadLetterStream) on subject eventlog.DeadLetterPrefix.<group>, holding the Event as
// stored and, in headers, why and when. Then the record is terminated for the group, which no longer
// spends deliveries on it. The dead letters are written before the record is let go of, each with a
// message id, so a crash in between stores them once and loses none.
//
// A dead letter is redriven by storing its event again in the event log, on its subject, with the
// groupHeader naming the one group it is for: members of other groups ack such a record unseen, and
// live tails skip it.
const (
	deadReasonHeader     = "Imbridge-Reason"
	deadDeliveriesHeader = "Imbridge-Deliveries"
	deadSeqHeader        = "Imbridge-Event-Sequence"
	deadSubjectHeader    = "Imbridge-Event-Subject"
	deadStoredHeader     = "Imbridge-Stored"
	// deadLetterRetry is how long a record whose dead letters could not be written waits before it
	// is tried again.
	deadLetterRetry = 5 * time.Second
	// deadLetterTimeout bounds the writing of one record's dead letters.
	deadLetterTimeout = 10 * time.Second
)

// owed takes out of the member's hold the events of a record delivered past max_deliveries that the
// group still owes: those this member holds of it (rec), or if it holds none, those not acked before
// (st). It returns them with the last nack's reason and whether a redelivery entry exists. m.mu is
// held.
func (m *member) owed(rec *record, evs []outgoing, st recordState, kept bool) (owed []outgoing, reason string, _ bool) {
	owed = make([]outgoing, 0, len(evs))
	if rec == nil {
		for _, ev := range evs {
			if !kept || !slices.Contains(st.Acked, ev.id) {
				owed = append(owed, ev)
			}
		}
		return owed, st.Reason, kept
	}
	for i, ev := range evs {
		switch j, ok := rec.unacked[ev.id]; {
		case ok && j == i:
			owed = append(owed, ev)
			delete(m.pending, ev.id)
		case !ok && slices.Contains(rec.nackedIDs, ev.id):
			owed = append(owed, ev) // nacked, waiting for the rest of the record
		}
	}
	delete(m.records, rec.seq)
	m.heldBytes -= rec.size
	select {
	case m.freed <- struct{}{}:
	default:
	}
	return owed, rec.reason, rec.kept
}

// giveUp dead-letters the owed events of a record delivered past max_deliveries (held: the record as
// this member held it, or nil) and terminates the record for the group. Should the dead letters not
// be written, the record is tried again later, what the group acked of it written down first.
func (m *member) giveUp(msg *nats.Msg, md *nats.MsgMetadata, owed []outgoing, held *record, reason string, kept bool) {
	seq := md.Sequence.Stream
	// This delivery, the one past max_deliveries, never reaches a subscriber.
	deliveries := md.NumDelivered - 1
	if reason == "" {
		times := "times"
		if deliveries == 1 {
			times = "time"
		}
		reason = fmt.Sprintf("the log delivered it %d %s without an ack (its ack wait of %v passed, or its member left or was handed it as it left)", deliveries, times, m.ackWait)
	}
	if err := m.s.deadLetter(m.sub.Group, msg.Subject, md, deliveries, owed, reason); err != nil {
		m.s.logger.Error("dead letters not written: the record is tried again", "group", m.sub.Group, "seq", seq, "err", err)
		if held != nil && held.changed {
			if err := m.s.keepState(m.sub.Group, seq, recordState{Acked: held.ackedIDs(), Reason: held.reason}); err != nil {
				m.s.logger.Warn("redelivery entry not written: the record comes back whole", "group", m.sub.Group, "seq", seq, "err", err)
			}
		}
		_ = msg.NakWithDelay(deadLetterRetry)
		return
	}
	term(msg, "imbridge: dead-lettered after max_deliveries")
	if kept {
		m.s.forgetState(m.sub.Group, seq)
	}
	m.gm.deadLetters.Add(float64(len(owed)))
	m.s.logger.Warn("events dead-lettered", "group", m.sub.Group, "seq", seq, "events", len(owed), "deliveries", deliveries, "reason", reason)
}

// deadLetter stores evs, of the record at md's sequence on subject, as dead letters of group.
func (s *Server) deadLetter(group, subject string, md *nats.MsgMetadata, deliveries uint64, evs []outgoing, reason string) error {
	ctx, cancel := context.WithTimeout(context.Background(), deadLetterTimeout)
	defer cancel()
	js := s.log.JetStream()
	acks := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, ev := range evs {
		msg := &nats.Msg{
			Subject: eventlog.DeadLetterPrefix + "." + group,
			Data:    ev.raw,
			Header: nats.Header{
				jetstream.MsgIDHeader: {group + "." + strconv.FormatUint(md.Sequence.Stream, 10) + "." + ev.id},
				deadReasonHeader:      {reason},
				deadDeliveriesHeader:  {strconv.FormatUint(deliveries, 10)},
				deadSeqHeader:         {strconv.FormatUint(md.Sequence.Stream, 10)},
				deadSubjectHeader:     {subject},
				deadStoredHeader:      {md.Timestamp.UTC().Format(time.RFC3339Nano)},
			},
		}
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			return err
		}
		acks = append(acks, f)
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// parseDeadLetter reads a message of the dead-letter stream back. It is outside input
// (validate.go): what does not hold together is an error naming what, never a panic.
func parseDeadLetter(m *jetstream.RawStreamMsg, withEvent bool) (*pb.DeadLetter, error) {
	group, ok := strings.CutPrefix(m.Subject, eventlog.DeadLetterPrefix+".")
	if !ok || validGroupName(group) != nil {
		return nil, fmt.Errorf("dead letter %d: subject %q names no group", m.Sequence, m.Subject)
	}
	dl := &pb.DeadLetter{Sequence: m.Sequence, Group: group, DeadLettered: timestamppb.New(m.Time)}
	dl.Reason = m.Header.Get(deadReasonHeader)
	if len(dl.Reason) > 4*maxReasonBytes || !utf8.ValidString(dl.Reason) {
		return nil, fmt.Errorf("dead letter %d: bad reason", m.Sequence)
	}
	n, err := strconv.ParseUint(m.Header.Get(deadDeliveriesHeader), 10, 32)
	if err != nil {
		return nil, fmt.Errorf("dead letter %d: deliveries: %w", m.Sequence, err)
	}
	dl.Deliveries = uint32(n)
	if dl.EventSequence, err = strconv.ParseUint(m.Header.Get(deadSeqHeader), 10, 64); err != nil {
		return nil, fmt.Errorf("dead letter %d: event sequence: %w", m.Sequence, err)
	}
	stored, err := time.Parse(time.RFC3339Nano, m.Header.Get(deadStoredHeader))
	if err != nil {
		return nil, fmt.Errorf("dead letter %d: stored: %w", m.Sequence, err)
	}
	dl.Stored = timestamppb.New(stored)
	if _, err := redriveSubject(m); err != nil {
		return nil, err
	}
	ev := new(pb.Event)
	if err := proto.Unmarshal(m.Data, ev); err != nil || !deliverable(ev) {
		return nil, fmt.Errorf("dead letter %d: not a valid event", m.Sequence)
	}
	dl.EventId, dl.Source, dl.Phase, dl.Kind, dl.Command = ev.Id, ev.Source, ev.Phase, ev.Kind, ev.Command
	if withEvent {
		ev.Sequence = dl.EventSequence
		dl.Event = ev
	}
	return dl, nil
}

// redriveSubject is the event-log subject a dead letter's event goes back to: its own, which must be
// an event subject.
func redriveSubject(m *jetstream.RawStreamMsg) (string, error) {
	subj := m.Header.Get(deadSubjectHeader)
	rest, ok := strings.CutPrefix(subj, eventlog.SubjectPrefix+".")
	if !ok || strings.Count(rest, ".") != 3 || strings.ContainsAny(subj, " \t\r\n*>") || strings.Contains(subj, "..") || strings.HasSuffix(subj, ".") {
		return "", fmt.Errorf("dead letter %d: subject %q is not an event subject", m.Sequence, subj)
	}
	return subj, nil
}
