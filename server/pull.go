package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fetch pulls as many events as the member has free slots, never more, so that a busy member does
// not hold events an idle one could take.
//
// It pulls on a subscription of its own rather than with jetstream's Fetch, for the member's way
// out. A member leaving while a pull request is waiting at the log must hand its records back only
// once the log can no longer deliver to that request: Fetch drops its subscription only after it
// has ended the batch, so a record handed back at once could go straight to the dead request and
// wait out the ack wait. Here the subscription is drained before anything is handed back.
func (m *member) fetch(ctx context.Context) error {
	nc := m.conn()
	// One request is waiting at a time, for at most m.max records; the rest is room for heartbeats.
	msgs := make(chan *nats.Msg, m.max+pullSlack)
	sub, err := nc.ChanSubscribe(nc.NewInbox(), msgs)
	if err != nil {
		return status.Errorf(codes.Unavailable, "consumer group %s: %v", m.sub.Group, err)
	}
	defer m.drain(sub, msgs)
	next := jetstream.DefaultAPIPrefix + "CONSUMER.MSG.NEXT." + m.s.log.Stream() + "." + m.sub.Group
	whole := false // the next record is larger than what is free: take it alone
	lost := 0      // pull requests lost in a row (no heartbeat)
	for {
		free, freeBytes := m.waitFree(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if free == 0 {
			// A pinned reader without room: a pull request that takes nothing keeps its pin.
			if m.pinID != "" {
				_, _, err := m.pull(ctx, nc, next, sub.Subject, msgs, 0, 0)
				if retry, err := m.pullLost(ctx, nc, err, &lost); !retry {
					return err
				}
			}
			continue
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
		switch {
		case whole:
			n, maxBytes = 1, 0 // one record, whatever its size
		case m.pinned:
			// The log adds its pin header to a record after counting the record against max_bytes,
			// so the reader would end the request before the log does, and the records the log
			// still sends would wait unread: bound the request by records of the average size.
			m.mu.Lock()
			n = min(n, max(1, int(float64(freeBytes)/m.recordBytes)))
			m.mu.Unlock()
			maxBytes = 0
		}
		got, tooBig, err := m.pull(ctx, nc, next, sub.Subject, msgs, n, maxBytes)
		if retry, err := m.pullLost(ctx, nc, err, &lost); !retry || ctx.Err() != nil {
			return err
		}
		whole = got == 0 && tooBig
	}
}

// conn is the NATS connection a member pulls on. A decider's events are on the path an IM server
// waits on (its verdict is the callback's answer), so they come over the answer connection: not
// queued behind every other group's deliveries on the shared one.
func (m *member) conn() *nats.Conn {
	if m.sub.Decide {
		return m.s.log.AnswerConn()
	}
	return m.s.log.Conn()
}

// pullLost decides what a pull request's outcome means for the member: go on (retry), or end with
// err. A request lost with a node (no heartbeat), or sent while the consumer had no leader (no
// responders), is asked again, after lostPullWait, while the connection is (or is back) up and the
// consumer exists: what the log sent to a lost request comes back after the ack wait. An ordered
// group's reader does not ask again: later records would go out before the lost ones come back, so
// it stops, and the next reader catches up (ordered.go). lost counts the requests lost in a row.
func (m *member) pullLost(ctx context.Context, nc *nats.Conn, err error, lost *int) (retry bool, _ error) {
	if !errors.Is(err, errNoHeartbeat) && !errors.Is(err, errPullNoResponders) {
		*lost = 0
		return err == nil, err
	}
	gone := func() error {
		if errors.Is(err, errPullNoResponders) {
			return status.Errorf(codes.Unavailable, "consumer group %s: the consumer is gone from the event log, or has no leader", m.sub.Group)
		}
		return status.Errorf(codes.Unavailable, "consumer group %s: no heartbeat from the event log", m.sub.Group)
	}
	if *lost++; m.dispatch != nil && m.pinID != "" || *lost > maxLostPulls || !nc.IsConnected() || m.consumerGone(ctx) {
		return false, gone()
	}
	m.s.logger.Warn("pull request lost: asking again", "group", m.sub.Group, "nats", nc.ConnectedServerName(), "err", err)
	select {
	case <-ctx.Done():
		return false, nil
	case <-time.After(lostPullWait):
	}
	return true, nil
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
//
// n == 0 asks for nothing: a request that returns at once, for a pinned reader to keep its pin.
func (m *member) pull(ctx context.Context, nc *nats.Conn, next, inbox string, msgs <-chan *nats.Msg, n, maxBytes int) (got int, tooBig bool, err error) {
	expires, heartbeat := pullExpires, pullHeartbeat
	if m.pinned {
		expires, heartbeat = pinnedPullExpires, pinnedPullExpires/3 // its pin lasts only pinnedTTL
	}
	var req []byte
	switch {
	case n == 0:
		// No record is 1 byte long: the log answers 409 (too big) or 404 (nothing) at once, or 423
		// when the pin is gone.
		req = fmt.Appendf(nil, `{"batch":1,"max_bytes":1,"no_wait":true,"expires":%d`, heartbeat)
	case maxBytes > 0:
		req = fmt.Appendf(nil, `{"batch":%d,"max_bytes":%d,"expires":%d,"idle_heartbeat":%d`, n, maxBytes, expires, heartbeat)
	default:
		req = fmt.Appendf(nil, `{"batch":%d,"expires":%d,"idle_heartbeat":%d`, n, expires, heartbeat)
	}
	if m.pinned {
		req = fmt.Appendf(req, `,"group":%q`, pinGroup)
		if m.pinID != "" {
			req = fmt.Appendf(req, `,"id":%q`, m.pinID)
		}
	}
	req = append(req, '}')
	if n == 0 {
		n = 1 // ends with the status
	}
	// A record that uses the request's max_bytes up exactly ends it with no status at all: the
	// bytes left are counted here as the log counts them (Msg.Size: subject, reply, headers, data).
	left := maxBytes
	if err := nc.PublishRequest(next, inbox, req); err != nil {
		return 0, false, status.Errorf(codes.Unavailable, "consumer group %s: %v", m.sub.Group, err)
	}
	idle := time.NewTimer(2 * heartbeat)
	defer idle.Stop()
	for got < n {
		select {
		case <-ctx.Done():
			return got, false, nil
		case <-idle.C:
			return got, false, errNoHeartbeat
		case msg := <-msgs:
			if code, ok := pullStatus(msg); ok {
				if ended, err := m.pullEnded(code, msg.Header); ended {
					return got, code == "409" && msg.Header.Get("Description") == pullTooBig, err
				}
			} else {
				got++
				left -= msg.Size()
				if m.pinned && fromLog(msg) {
					switch m.keepPin(msg.Header.Get(pinHeader)) {
					case pinNew:
						m.dispatch.pinned(ctx)
					case pinMoved:
						nak(msg)     // not handled: hand it back
						m.pinID = "" // the pin is another reader's now: never unpin it
						return got, false, errPinLost
					}
				}
				if err := m.handle(ctx, msg); err != nil {
					return got, false, err
				}
				if maxBytes > 0 && left <= 0 {
					return got, false, nil
				}
			}
			idle.Reset(2 * heartbeat)
		}
	}
	return got, false, nil
}

// errNoHeartbeat: a pull request's heartbeats stopped (the request was lost with a node).
var errNoHeartbeat = errors.New("no heartbeat from the event log")

// errPullNoResponders: nobody answered a pull request (the consumer is gone, or between leaders).
var errPullNoResponders = errors.New("no responders")

// maxLostPulls is how many pull requests in a row may be lost before the member is cut off (a log
// that keeps losing them is not coming back), each asked again after lostPullWait.
const (
	maxLostPulls = 5
	lostPullWait = 250 * time.Millisecond
)

// consumerGone reports whether the log says the group's consumer no longer exists (deleted under
// its members); not knowing (the log does not answer) is not gone.
func (m *member) consumerGone(ctx context.Context) bool {
	_, err := m.s.log.JetStream().Consumer(ctx, m.s.log.Stream(), m.sub.Group)
	return errors.Is(err, jetstream.ErrConsumerNotFound)
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
	case code == "423": // a pinned reader whose pin went elsewhere (it timed out, or a leader changed)
		m.pinID = "" // the pin is another reader's now: never unpin it
		return true, errPinLost
	case code == "503": // no responders: the consumer is gone, or its leader is being elected
		return true, errPullNoResponders
	}
	return true, status.Errorf(codes.Unavailable, "consumer group %s: %s %s", m.sub.Group, code, why)
}

// pinHeader carries, on each record delivered to an ordered group's pinned reader, its pin.
const pinHeader = "Nats-Pin-Id"

// errPinLost: an ordered group's reader lost its pin (it went quiet for pinnedTTL, or the
// consumer's leader changed). Another instance may read the group now: this reader stops, handing
// its records back, and its members reconnect (ordered.go).
var errPinLost = status.Error(codes.Unavailable, "ordered group: this instance lost its turn to read the group (its pin moved): reconnect")

// What a record's pin says to the reader that got it.
const (
	pinSame  = iota // the pin it holds, or none
	pinNew          // its first pin: catch up (ordered.go)
	pinMoved        // another pin: it lost its own
)

// keepPin keeps the pin the log gave this reader, to send with its pull requests. The pin is
// outside input: only a NUID-like token is kept.
func (m *member) keepPin(id string) int {
	if id == m.pinID || id == "" || len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}) {
		return pinSame
	}
	if m.pinID != "" {
		return pinMoved
	}
	m.pinID = id
	return pinNew
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
