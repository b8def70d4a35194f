package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

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
	if s.stopCtx.Err() != nil {
		return status.Error(codes.Unavailable, "shutting down")
	}
	s.subs.Add(1)
	defer s.subs.Done()
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.stopCtx, cancel)()

	cons, err := s.consumer(ctx, sub)
	if err != nil {
		return err
	}
	m := &member{
		s:       s,
		sub:     sub,
		stream:  stream,
		pending: map[string]jetstream.Msg{},
	}
	if sub.Group != "" {
		max := int(sub.GetMaxInFlight())
		if max <= 0 {
			max = DefaultMaxInFlight
		}
		m.slots = make(chan struct{}, max)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(cap(m.slots) + 1))
	if err != nil {
		return status.Errorf(codes.Unavailable, "consume: %v", err)
	}
	if sub.Decide {
		defer s.deciders.add(sub.Group, sub.GetFilter())()
	}
	if err := stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Subscribed{
		Subscribed: &pb.Subscribed{Group: sub.Group, Decide: sub.Decide},
	}}); err != nil {
		it.Stop()
		return err
	}
	s.logger.Info("subscriber joined", "group", sub.Group, "decide", sub.Decide)
	defer s.logger.Info("subscriber left", "group", sub.Group)

	recvErr := make(chan error, 1)
	go func() {
		err := m.receive(ctx)
		recvErr <- err
		if !errors.Is(err, io.EOF) {
			cancel()
		}
		// io.EOF: the subscriber closed its side (grpcurl -d '{...}'): keep delivering.
	}()
	stopIter := context.AfterFunc(ctx, it.Drain)
	defer stopIter()
	sendErr := m.deliver(ctx, it)
	cancel()
	m.release(it)
	if sendErr != nil {
		return sendErr
	}
	select {
	case err := <-recvErr:
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	default:
	}
	if s.stopCtx.Err() != nil {
		return status.Error(codes.Unavailable, "bridge shutting down")
	}
	return nil
}

// consumer finds or creates the JetStream consumer for a subscription.
func (s *Server) consumer(ctx context.Context, sub *pb.Subscription) (jetstream.Consumer, error) {
	js, streamName := s.log.JetStream(), s.log.Stream()
	subjects := filterSubjects(sub.GetFilter())
	if subjects[0] == allSubjects {
		subjects = nil
	}
	if sub.Group == "" {
		c, err := js.OrderedConsumer(ctx, streamName, jetstream.OrderedConsumerConfig{
			FilterSubjects: subjects,
			DeliverPolicy:  jetstream.DeliverNewPolicy,
		})
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "live tail: %v", err)
		}
		return c, nil
	}
	ackWait := DefaultAckWait
	if d := sub.GetAckWait(); d != nil && d.AsDuration() > 0 {
		ackWait = d.AsDuration()
	}
	c, err := js.Consumer(ctx, streamName, sub.Group)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cfg := jetstream.ConsumerConfig{
			Durable:        sub.Group,
			Description:    "imbridge consumer group",
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        ackWait,
			MaxDeliver:     -1, // redelivered until acked: nothing is dropped
			FilterSubjects: subjects,
			DeliverPolicy:  jetstream.DeliverAllPolicy,
			MaxAckPending:  -1, // members bound their own in-flight events
		}
		if sub.Start == pb.StartPosition_START_POSITION_NEW {
			cfg.DeliverPolicy = jetstream.DeliverNewPolicy
		}
		c, err = js.CreateOrUpdateConsumer(ctx, streamName, cfg)
	case err == nil:
		// A group's filter and ack wait are the latest member's.
		cfg := c.CachedInfo().Config
		if cfg.AckWait != ackWait || !slices.Equal(cfg.FilterSubjects, subjects) || cfg.FilterSubject != "" {
			cfg.AckWait, cfg.FilterSubjects, cfg.FilterSubject = ackWait, subjects, ""
			c, err = js.UpdateConsumer(ctx, streamName, cfg)
		}
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "consumer group %s: %v", sub.Group, err)
	}
	return c, nil
}

// member is one connected subscriber.
type member struct {
	s      *Server
	sub    *pb.Subscription
	stream pb.EventService_SubscribeServer
	slots  chan struct{} // one per delivered, unacked event; nil for a live tail

	mu      sync.Mutex
	pending map[string]jetstream.Msg // delivered, not yet acked, by event id; guarded by mu
}

// deliver sends events until the iterator ends or a send fails.
func (m *member) deliver(ctx context.Context, it jetstream.MessagesContext) error {
	for {
		msg, err := it.Next()
		if err != nil {
			return nil // iterator drained: ctx ended
		}
		if ctx.Err() != nil {
			if m.slots != nil {
				_ = msg.Nak()
			}
			return nil
		}
		ev := new(pb.Event)
		if err := proto.Unmarshal(msg.Data(), ev); err != nil {
			m.s.logger.Error("undecodable event in log; terminated", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
			continue
		}
		if md, err := msg.Metadata(); err == nil {
			ev.Sequence = md.Sequence.Stream
		}
		if !matches(m.sub.GetFilter(), ev) {
			_ = msg.Ack() // the subject filter is coarse; this group does not want it
			continue
		}
		if m.slots != nil {
			if !m.hold(ctx, ev.Id, msg) {
				_ = msg.Nak()
				return nil
			}
		}
		if err := m.stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Event{Event: ev}}); err != nil {
			return err
		}
	}
}

// hold records msg as delivered and unacked, waiting for a free slot.
func (m *member) hold(ctx context.Context, id string, msg jetstream.Msg) bool {
	m.mu.Lock()
	if _, again := m.pending[id]; again {
		m.pending[id] = msg // redelivered to us: already holds a slot
		m.mu.Unlock()
		return true
	}
	m.mu.Unlock()
	select {
	case m.slots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	m.mu.Lock()
	m.pending[id] = msg
	m.mu.Unlock()
	return true
}

// take removes an event from pending.
func (m *member) take(id string) jetstream.Msg {
	m.mu.Lock()
	defer m.mu.Unlock()
	msg, ok := m.pending[id]
	if !ok {
		return nil
	}
	delete(m.pending, id)
	<-m.slots
	return msg
}

// receive handles acks and verdicts until the stream ends.
func (m *member) receive(ctx context.Context) error {
	for {
		req, err := m.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			if ctx.Err() != nil || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		if m.slots == nil {
			continue // a live tail has nothing to ack
		}
		switch r := req.Request.(type) {
		case *pb.SubscribeRequest_Ack:
			if msg := m.take(r.Ack.GetEventId()); msg != nil {
				_ = msg.Ack()
			}
		case *pb.SubscribeRequest_Verdict:
			msg := m.take(r.Verdict.GetEventId())
			if msg == nil {
				continue
			}
			if to := msg.Headers().Get(verdictToHeader); to != "" && m.sub.Decide {
				v := r.Verdict.GetVerdict()
				if v == nil {
					v = allowVerdict
				}
				if err := sendVerdict(m.s.log.Conn(), to, m.sub.Group, v); err != nil {
					m.s.logger.Warn("verdict not sent", "event", r.Verdict.GetEventId(), "err", err)
				}
			}
			_ = msg.Ack()
		case *pb.SubscribeRequest_Subscription:
			return status.Error(codes.InvalidArgument, "subscription already set")
		}
	}
}

// release hands every event this member held back to its group, at once rather than after the ack
// wait, including the ones the iterator had fetched but not yet delivered.
func (m *member) release(it jetstream.MessagesContext) {
	it.Drain()
	for {
		msg, err := it.Next()
		if err != nil {
			break
		}
		if m.slots != nil {
			_ = msg.Nak()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, msg := range m.pending {
		_ = msg.Nak()
		delete(m.pending, id)
	}
}
