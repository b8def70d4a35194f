package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/imbridge/imbridge/auth"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// A consumer group's settings (filter, decide, ack wait) belong to the group, not to a member: they
// are stored in the durable consumer, so that every member delivers, acks and decides alike. A member
// asking for other settings is refused while another member of the group is connected to this
// bridge; with none connected, the new settings replace the old.
const (
	metaFilter        = "imbridge.filter"
	metaDecide        = "imbridge.decide"
	metaMaxDeliveries = "imbridge.max_deliveries" // absent in groups made before it: DefaultMaxDeliveries
	metaOrder         = "imbridge.order"          // absent: unordered
	// metaAckWait is the group's ack wait when the log's is shorter (Options.FailoverWait); absent
	// in groups made before it, whose log ack wait is the group's.
	metaAckWait      = "imbridge.ack_wait"
	metaOrderIMGroup = "im_group"
)

// joinGroup finds or creates a group's durable consumer and counts the member in. It returns the
// group's settings (sub's, except where sub left them unset), the consumer's ack wait (the log
// delivers a record again when it passes without an ack or an InProgress) and the function that
// counts the member out.
func (s *Server) joinGroup(ctx context.Context, sub *pb.Subscription) (*pb.Subscription, time.Duration, func(), error) {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	settings, logAckWait, err := s.groupConsumer(ctx, sub, s.groupMembers[sub.Group] > 0 || s.presence.elsewhere(sub.Group) > 0)
	if err != nil {
		return nil, 0, nil, err
	}
	s.groupMembers[sub.Group]++
	s.groups.track(sub.Group)
	leave := func() {
		s.groupsMu.Lock()
		defer s.groupsMu.Unlock()
		if s.groupMembers[sub.Group]--; s.groupMembers[sub.Group] == 0 {
			delete(s.groupMembers, sub.Group)
			s.groups.untrack(sub.Group)
		}
	}
	return settings, logAckWait, leave, nil
}

// Members is how many members of group are connected to this bridge instance.
func (s *Server) Members(group string) int {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	return s.groupMembers[group]
}

func (s *Server) groupConsumer(ctx context.Context, sub *pb.Subscription, inUse bool) (*pb.Subscription, time.Duration, error) {
	js, streamName := s.log.JetStream(), s.log.Stream()
	want := groupConfig(sub, s.failoverWait)
	c, err := js.Consumer(ctx, streamName, sub.Group)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if c, err = s.groups.restore(ctx, sub.Group); err != nil {
			return nil, 0, err
		}
		if c == nil { // a new group
			return s.newGroup(ctx, sub, want)
		}
	}
	if err != nil {
		return nil, 0, status.Errorf(codes.Unavailable, "consumer group %s: %v", sub.Group, err)
	}
	info := c.CachedInfo()
	have, err := settingsOf(info.Config)
	if err != nil {
		return nil, 0, status.Errorf(codes.FailedPrecondition, "consumer group %s: %v", sub.Group, err)
	}
	if sub.Order != pb.Order_ORDER_UNSPECIFIED && have.Order != sub.Order {
		// An ordered group is read by one instance at a time through a pinned JetStream consumer
		// (ordered.go); members elsewhere may be pulling as the group was.
		return nil, 0, status.Errorf(codes.FailedPrecondition,
			"consumer group %s exists with order %v: the order of a group is fixed when it is created (delete the group to change it)", sub.Group, have.Order)
	}
	if sub.AckWait == nil || sub.MaxDeliveries == 0 || sub.Order != have.Order {
		sub = proto.CloneOf(sub)
		sub.Order = have.Order // unset: the group's
		if sub.AckWait == nil {
			sub.AckWait = have.AckWait // unset: the group's
		}
		if sub.MaxDeliveries == 0 {
			sub.MaxDeliveries = have.MaxDeliveries
		}
	}
	if sub.Order != pb.Order_ORDER_UNSPECIFIED && sub.Decide {
		return nil, 0, status.Errorf(codes.FailedPrecondition, "consumer group %s is ordered (order %v): it cannot decide, a before-callback cannot wait behind its IM group's earlier events", sub.Group, sub.Order)
	}
	if sameSettings(have, sub) {
		// The member's own fields (group, max_in_flight; start, which an existing group ignores)
		// with the group's settings as stored.
		joined := proto.CloneOf(sub)
		joined.Filter, joined.Decide, joined.AckWait, joined.MaxDeliveries, joined.Order = have.Filter, have.Decide, have.AckWait, have.MaxDeliveries, have.Order
		cfg := info.Config
		if !inUse && madeBefore(cfg, s.failoverWait) {
			// Its log ack wait becomes the failover wait, an ordered group's pin times out sooner,
			// its consumer moves to memory. Not while members anywhere keep its records, or its
			// pin, at the old pace.
			want := groupConfig(joined, s.failoverWait)
			cfg.AckWait, cfg.Metadata, cfg.PinnedTTL = want.AckWait, want.Metadata, want.PinnedTTL
			// A consumer on file moves only once presence has heard from every instance: a member
			// elsewhere still pulling it would lose it.
			if !cfg.MemoryStorage && time.Since(s.started) > presenceStale {
				if err := s.groups.toMemory(ctx, cfg, info.AckFloor.Stream); err != nil {
					return nil, 0, err
				}
			} else {
				if _, err := js.UpdateConsumer(ctx, streamName, cfg); err != nil {
					return nil, 0, status.Errorf(codes.Unavailable, "consumer group %s: %v", sub.Group, err)
				}
				if err := s.groups.sync(ctx, sub.Group, nil); err != nil {
					return nil, 0, status.Errorf(codes.Unavailable, "consumer group %s: its record: %v", sub.Group, err)
				}
			}
			s.logger.Info("consumer group made by an older bridge: failover wait, pin timeout and memory state set", "group", sub.Group, "ack_wait", cfg.AckWait, "pinned_ttl", cfg.PinnedTTL)
		}
		return joined, cfg.AckWait, nil
	}
	if inUse {
		return nil, 0, status.Errorf(codes.FailedPrecondition,
			"consumer group %s is in use with other settings (filter %v, decide %v, ack_wait %v, max_deliveries %d): members of a group must agree",
			sub.Group, have.GetFilter(), have.Decide, have.GetAckWait().AsDuration(), have.MaxDeliveries)
	}
	// An ingest instance serves deciders only: it does not turn a group that delivers into one that
	// decides, and take on its deliveries (and its backlog).
	if !s.role.Delivers() && !have.Decide {
		return nil, 0, status.Errorf(codes.FailedPrecondition,
			"consumer group %s exists and does not decide; this instance serves deciders only (--role ingest): replace its settings at an instance with --role deliver or all", sub.Group)
	}
	// Replacing a group's settings changes what every member gets from then on (a narrower filter
	// skips events the group would have had): where subscribers have tokens, that takes admin.
	if p := auth.FromContext(ctx); p != nil && !p.MayManageGroups() {
		return nil, 0, status.Errorf(codes.FailedPrecondition,
			"consumer group %s exists with other settings (filter %v, decide %v, ack_wait %v, max_deliveries %d); subscriber %s may not replace them (scope admin)",
			sub.Group, have.GetFilter(), have.Decide, have.GetAckWait().AsDuration(), have.MaxDeliveries, p.Name)
	}
	want = groupConfig(sub, s.failoverWait) // with the group's order
	cfg := info.Config
	cfg.AckWait, cfg.FilterSubjects, cfg.FilterSubject, cfg.Metadata = want.AckWait, want.FilterSubjects, "", want.Metadata
	if _, err := js.UpdateConsumer(ctx, streamName, cfg); err != nil {
		return nil, 0, status.Errorf(codes.Unavailable, "consumer group %s: %v", sub.Group, err)
	}
	if err := s.groups.sync(ctx, sub.Group, nil); err != nil {
		return nil, 0, status.Errorf(codes.Unavailable, "consumer group %s: its record: %v", sub.Group, err)
	}
	s.logger.Info("consumer group settings replaced", "group", sub.Group)
	return sub, cfg.AckWait, nil
}

// newGroup creates a group's consumer, with cfg, and its record: a group the log could not bring
// back is not made.
func (s *Server) newGroup(ctx context.Context, sub *pb.Subscription, cfg jetstream.ConsumerConfig) (*pb.Subscription, time.Duration, error) {
	js, streamName := s.log.JetStream(), s.log.Stream()
	c, err := js.CreateConsumer(ctx, streamName, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) { // made meanwhile, by another instance
		return s.groupConsumer(ctx, sub, true)
	}
	if err != nil {
		return nil, 0, status.Errorf(codes.Unavailable, "consumer group %s: %v", sub.Group, err)
	}
	info := c.CachedInfo()
	if err := s.groups.create(ctx, info.Config, info.AckFloor.Stream); err != nil {
		_ = js.DeleteConsumer(context.WithoutCancel(ctx), streamName, sub.Group)
		return nil, 0, status.Errorf(codes.Unavailable, "consumer group %s: its record: %v", sub.Group, err)
	}
	return sub, cfg.AckWait, nil
}

// madeBefore tells whether a group's consumer was made by a bridge older than failover waits (its
// ack wait is the group's, longer than failover), than the shorter pin timeout, or than consumers
// in memory (groupstate.go).
func madeBefore(cfg jetstream.ConsumerConfig, failover time.Duration) bool {
	_, ok := cfg.Metadata[metaAckWait]
	return !ok && cfg.AckWait > failover || cfg.PriorityPolicy == jetstream.PriorityPolicyPinned && cfg.PinnedTTL > pinnedTTL ||
		!cfg.MemoryStorage
}

// groupConfig is the consumer of a group with sub's settings. Its ack wait is at most failover: the
// bridge keeps what its members hold from being delivered again until the group's ack wait passes
// (member.keepHeld), and the records an instance held when it died go to other instances after
// failover.
func groupConfig(sub *pb.Subscription, failover time.Duration) jetstream.ConsumerConfig {
	filter, _ := proto.MarshalOptions{Deterministic: true}.Marshal(sub.GetFilter())
	decide := "false"
	if sub.Decide {
		decide = "true"
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        sub.Group,
		Description:    "imbridge consumer group",
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        min(ackWaitOf(sub), failover),
		MaxDeliver:     -1, // delivered again until acked: nothing is dropped
		FilterSubjects: nonCatchAll(filterSubjects(sub.GetFilter())),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxAckPending:  -1,   // each member bounds its own unacked events
		MemoryStorage:  true, // groupstate.go
		Metadata: map[string]string{
			metaFilter:        base64.StdEncoding.EncodeToString(filter),
			metaDecide:        decide,
			metaMaxDeliveries: strconv.Itoa(maxDeliveriesOf(sub)),
			metaAckWait:       ackWaitOf(sub).String(),
		},
	}
	if sub.Order == pb.Order_ORDER_IM_GROUP {
		cfg.Metadata[metaOrder] = metaOrderIMGroup
		cfg.PriorityGroups = []string{pinGroup}
		cfg.PriorityPolicy = jetstream.PriorityPolicyPinned
		cfg.PinnedTTL = pinnedTTL
	}
	// A new decider group judges live callbacks; working through stored history first would make
	// them all time out.
	deliverNew := sub.Start == pb.StartPosition_START_POSITION_NEW || sub.Start == pb.StartPosition_START_POSITION_UNSPECIFIED && sub.Decide
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = startAt(sub, deliverNew)
	return cfg
}

// startAt is where a new consumer for sub starts: its start_sequence or start_time, else the log's
// end (deliverNew) or its start.
func startAt(sub *pb.Subscription, deliverNew bool) (jetstream.DeliverPolicy, uint64, *time.Time) {
	switch {
	case sub.StartSequence > 0:
		return jetstream.DeliverByStartSequencePolicy, sub.StartSequence, nil
	case sub.StartTime != nil:
		t := sub.StartTime.AsTime()
		return jetstream.DeliverByStartTimePolicy, 0, &t
	case deliverNew:
		return jetstream.DeliverNewPolicy, 0, nil
	}
	return jetstream.DeliverAllPolicy, 0, nil
}

// settingsOf reads a group's settings back from its consumer.
func settingsOf(cfg jetstream.ConsumerConfig) (*pb.Subscription, error) {
	raw, ok := cfg.Metadata[metaFilter]
	if !ok {
		return nil, errors.New("not an imbridge consumer group")
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("stored filter: %w", err)
	}
	f := new(pb.EventFilter)
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("stored filter: %w", err)
	}
	maxDeliveries := DefaultMaxDeliveries
	if raw, ok := cfg.Metadata[metaMaxDeliveries]; ok {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > MaxDeliveries {
			return nil, fmt.Errorf("stored max_deliveries %q: want 1-%d", raw, MaxDeliveries)
		}
		maxDeliveries = n
	}
	ackWait := cfg.AckWait
	if raw, ok := cfg.Metadata[metaAckWait]; ok {
		d, err := time.ParseDuration(raw)
		if err != nil || d < MinAckWait || d < cfg.AckWait {
			return nil, fmt.Errorf("stored ack_wait %q: want a duration of at least %v and of the consumer's ack wait", raw, MinAckWait)
		}
		ackWait = d
	}
	if ackWait != 0 && ackWait < MinAckWait { // 0: the default; a consumer without the stored ack_wait
		return nil, fmt.Errorf("ack wait %v: want at least %v", ackWait, MinAckWait)
	}
	order := pb.Order_ORDER_UNSPECIFIED
	switch raw := cfg.Metadata[metaOrder]; raw {
	case "":
	case metaOrderIMGroup:
		order = pb.Order_ORDER_IM_GROUP
	default:
		return nil, fmt.Errorf("stored order %q: unknown", raw)
	}
	return &pb.Subscription{
		Order:         order,
		Filter:        f,
		Decide:        cfg.Metadata[metaDecide] == "true",
		AckWait:       durationpb.New(ackWait),
		MaxDeliveries: uint32(maxDeliveries),
	}, nil
}

func sameSettings(have, want *pb.Subscription) bool {
	return have.Decide == want.Decide &&
		proto.Equal(have.GetFilter(), orEmpty(want.GetFilter())) &&
		have.GetAckWait().AsDuration() == ackWaitOf(want) &&
		maxDeliveriesOf(have) == maxDeliveriesOf(want)
}

func orEmpty(f *pb.EventFilter) *pb.EventFilter {
	if f == nil {
		return &pb.EventFilter{}
	}
	return f
}

func ackWaitOf(sub *pb.Subscription) time.Duration {
	if d := sub.GetAckWait(); d != nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	return DefaultAckWait
}

func maxDeliveriesOf(sub *pb.Subscription) int {
	if n := sub.GetMaxDeliveries(); n > 0 {
		return int(n)
	}
	return DefaultMaxDeliveries
}
