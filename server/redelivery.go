package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
)

// A log record comes back to its group whole (a handed-back record, a nacked one, one whose ack wait
// passed): JetStream acks a message, not part of one. So that a record of many events, part of them
// acked, does not deliver those again, a member that lets go of such a record first writes what the
// group did with it to the log's redelivery bucket (eventlog.RedeliveryBucket), keyed by group and
// stream sequence: the ids of the events acked and the last nack's reason. Whoever receives the
// record again, on any instance, reads the entry and delivers only the rest; the entry goes when the
// record is acked whole or dead-lettered (or expires with the events).
//
// What is not written is not known: a record a member still held when its bridge was killed, or
// whose ack wait passed while its member stayed connected, comes back whole (at least once).

// recordState is a redelivery entry, stored as JSON.
type recordState struct {
	Acked  []string `json:"acked,omitempty"`  // ids of the record's events the group acked
	Reason string   `json:"reason,omitempty"` // the last nack's, for the dead letter
}

// Limits on a redelivery entry as read back: it is outside input (validate.go).
const (
	maxStateIDs    = 2 * maxRecordEvents
	maxStateIDLen  = 256
	maxReasonBytes = 1024
	// maxStateBytes is more than the largest entry the bridge writes (JSON of maxStateIDs ids and a
	// reason, with every byte escaped).
	maxStateBytes = 6 * (maxStateIDs*maxStateIDLen + maxReasonBytes)
)

// stateTimeout bounds one read or write of the redelivery bucket. They run when a member lets go
// of a record, also as it leaves (its own context is done by then), hence a context of their own.
const stateTimeout = 5 * time.Second

func stateKey(group string, seq uint64) string {
	return group + "." + strconv.FormatUint(seq, 10)
}

// parseRecordState reads a redelivery entry back.
func parseRecordState(b []byte) (recordState, error) {
	if len(b) > maxStateBytes {
		return recordState{}, fmt.Errorf("redelivery entry of %d bytes, at most %d", len(b), maxStateBytes)
	}
	var st recordState
	if err := json.Unmarshal(b, &st); err != nil {
		return recordState{}, fmt.Errorf("redelivery entry: %w", err)
	}
	if len(st.Acked) > maxStateIDs {
		return recordState{}, fmt.Errorf("redelivery entry: %d acked ids, at most %d", len(st.Acked), maxStateIDs)
	}
	for _, id := range st.Acked {
		if id == "" || len(id) > maxStateIDLen {
			return recordState{}, errors.New("redelivery entry: bad event id")
		}
	}
	if len(st.Reason) > maxReasonBytes || !utf8.ValidString(st.Reason) {
		return recordState{}, errors.New("redelivery entry: bad reason")
	}
	return st, nil
}

// loadState reads what group did with the record at seq before; ok is false when nothing was kept.
// An entry that cannot be read is logged and taken as none: the record is delivered whole.
func (s *Server) loadState(group string, seq uint64) (st recordState, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	e, err := s.log.Redelivery().Get(ctx, stateKey(group, seq))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return recordState{}, false
	}
	if err == nil {
		st, err = parseRecordState(e.Value())
	}
	if err != nil {
		s.metrics.rejected.WithLabelValues(rejectState).Inc()
		s.logger.Warn("redelivery entry not read: the record is delivered whole", "group", group, "seq", seq, "err", err)
		return recordState{}, false
	}
	return st, true
}

// keepState writes what group did with the record at seq, before the record is handed back.
func (s *Server) keepState(group string, seq uint64, st recordState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	_, err = s.log.Redelivery().Put(ctx, stateKey(group, seq), b)
	return err
}

// forgetState removes the entry of a record the group is done with.
func (s *Server) forgetState(group string, seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	if err := s.log.Redelivery().Purge(ctx, stateKey(group, seq)); err != nil {
		s.logger.Warn("redelivery entry not removed (it expires with the events)", "group", group, "seq", seq, "err", err)
	}
}
