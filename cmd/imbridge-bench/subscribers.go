package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// receipts records, for each delivered event, the time from its arrival at the bridge
// (Event.received_time) to its receipt by a subscriber. Both clocks are this machine's.
type receipts struct {
	mu       sync.Mutex
	from     time.Time       // events received by the bridge before this are warm-up; guarded by mu
	lat      []time.Duration // guarded by mu
	received atomic.Int64    // every event, warm-up included
}

func (r *receipts) reset() {
	r.mu.Lock()
	r.from, r.lat = time.Now(), r.lat[:0]
	r.mu.Unlock()
}

func (r *receipts) add(ev *pb.Event, at time.Time) {
	r.received.Add(1)
	t := ev.GetReceivedTime().AsTime()
	r.mu.Lock()
	if !t.Before(r.from) {
		r.lat = append(r.lat, at.Sub(t))
	}
	r.mu.Unlock()
}

func (r *receipts) sorted() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.lat)
	slices.Sort(out)
	return out
}

// subscriber is one open Subscribe stream that acks (or, deciding, allows) every event.
type subscriber struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan error
}

// subscribe opens a group member, with a's token (nil: none). It returns once the bridge confirmed the subscription.
func subscribe(addr string, a *benchAuth, sub *pb.Subscription, rec *receipts) (*subscriber, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(a.subscriberContext(context.Background()))
	stream, err := pb.NewEventServiceClient(conn).Subscribe(ctx)
	if err == nil {
		err = stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}})
	}
	if err == nil {
		var first *pb.SubscribeResponse
		if first, err = stream.Recv(); err == nil && first.GetSubscribed() == nil {
			err = fmt.Errorf("first answer %v", first)
		}
	}
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("subscribe %s: %w", sub.Group, err)
	}
	s := &subscriber{conn: conn, cancel: cancel, done: make(chan error, 2)}
	// A decider answers each event as it comes. Others ack through acker, which sends the ids that
	// have piled up while its last Send was under way in one Ack message, as a subscriber working
	// through a busy stream would; at a low rate that is one id per message, sent at once.
	var toAck chan string
	if !sub.Decide {
		toAck = make(chan string, maxAckBatch)
		go s.acker(stream, toAck)
	}
	go func() {
		if toAck != nil {
			defer close(toAck)
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				s.done <- err
				return
			}
			ev := resp.GetEvent()
			if ev == nil {
				continue
			}
			if rec != nil {
				rec.add(ev, time.Now())
			}
			if toAck != nil {
				toAck <- ev.Id
				continue
			}
			if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Verdict{Verdict: &pb.VerdictReply{
				EventId: ev.Id, Verdict: &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW},
			}}}); err != nil {
				s.done <- err
				return
			}
		}
	}()
	return s, nil
}

// maxAckBatch is the most event ids the bench subscriber puts in one Ack message.
const maxAckBatch = 256

// acker sends the ids it is given in Ack messages of up to maxAckBatch, until ids is closed.
func (s *subscriber) acker(stream pb.EventService_SubscribeClient, ids <-chan string) {
	batch := make([]string, 0, maxAckBatch)
	for id := range ids {
		batch = append(batch[:0], id)
	more:
		for len(batch) < maxAckBatch {
			select {
			case id, ok := <-ids:
				if !ok {
					break more
				}
				batch = append(batch, id)
			default:
				break more
			}
		}
		ack := &pb.Ack{EventId: batch[0], MoreEventIds: batch[1:]}
		if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: ack}}); err != nil {
			s.done <- err
			for range ids { // let the receiver finish
			}
			return
		}
	}
}

func (s *subscriber) close() {
	s.cancel()
	<-s.done
	s.conn.Close()
}
