package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imbridge/imbridge/auth"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// adminService manages consumer groups: the durable JetStream consumers the bridge made (others in
// the stream are not its business and are not shown). Authorization is the interceptor's (admin
// scope).
type adminService struct {
	pb.UnimplementedAdminServiceServer
	s *Server
}

// Admin is the AdminService.
func (s *Server) Admin() pb.AdminServiceServer { return adminService{s: s} }

func (a adminService) ListGroups(ctx context.Context, _ *pb.ListGroupsRequest) (*pb.ListGroupsResponse, error) {
	stream, err := a.s.log.JetStream().Stream(ctx, a.s.log.Stream())
	if err != nil {
		return nil, logError(err)
	}
	out := &pb.ListGroupsResponse{}
	list := stream.ListConsumers(ctx)
	for ci := range list.Info() {
		if g, ok := a.group(ci); ok && auth.AllowGroupAdmin(ctx, g.Name) == nil {
			out.Groups = append(out.Groups, g)
		}
	}
	if err := list.Err(); err != nil {
		return nil, logError(err)
	}
	slices.SortFunc(out.Groups, func(x, y *pb.Group) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}

func (a adminService) GetGroup(ctx context.Context, req *pb.GetGroupRequest) (*pb.Group, error) {
	ci, err := a.info(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	g, _ := a.group(ci)
	return g, nil
}

func (a adminService) DeleteGroup(ctx context.Context, req *pb.DeleteGroupRequest) (*pb.DeleteGroupResponse, error) {
	if _, err := a.info(ctx, req.GetName()); err != nil {
		// A group the log lost and could not bring back (groupstate.go) has its record only.
		if status.Code(err) != codes.NotFound {
			return nil, err
		}
		if ok, rerr := a.s.groups.has(ctx, req.GetName()); rerr != nil || !ok {
			return nil, cmp.Or(rerr, err)
		}
		if err := a.s.groups.forget(ctx, req.GetName()); err != nil {
			return nil, logError(err)
		}
		a.s.logger.Info("consumer group's record deleted (the log had lost the group)", "group", req.GetName(), "by", principalName(ctx))
		return &pb.DeleteGroupResponse{}, nil
	}
	if n := a.s.Members(req.GetName()); n > 0 && !req.GetForce() {
		return nil, status.Errorf(codes.FailedPrecondition, "group %s has %d members connected here: delete it with force to cut them off", req.GetName(), n)
	}
	// The record first: a group whose record is gone cannot come back (groupstate.go).
	if err := a.s.groups.forget(ctx, req.GetName()); err != nil {
		return nil, logError(err)
	}
	if err := a.s.log.JetStream().DeleteConsumer(ctx, a.s.log.Stream(), req.GetName()); err != nil {
		return nil, logError(err)
	}
	a.s.metrics.forgetGroup(req.GetName())
	if err := a.s.log.ForgetGroup(ctx, req.GetName()); err != nil {
		a.s.logger.Warn("redelivery entries of a deleted group not removed (they expire with the events)", "group", req.GetName(), "err", err)
	}
	a.s.logger.Info("consumer group deleted", "group", req.GetName(), "by", principalName(ctx))
	return &pb.DeleteGroupResponse{}, nil
}

func (a adminService) ResetGroup(ctx context.Context, req *pb.ResetGroupRequest) (*pb.Group, error) {
	if _, err := a.info(ctx, req.GetName()); err != nil {
		return nil, err
	}
	// A member holding records as the group moves would write down, when it lets go of them, what
	// it acked of them before the move, and the group would skip those events when it gets them again.
	if n, m := a.s.Members(req.GetName()), a.s.presence.elsewhere(req.GetName()); n+m > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "group %s has %d members connected here and %d to other instances: stop them before moving the group", req.GetName(), n, m)
	}
	js, name := a.s.log.JetStream(), a.s.log.Stream()
	var seq uint64
	switch to := req.GetTo().(type) {
	case *pb.ResetGroupRequest_Sequence:
		if to.Sequence == 0 {
			return nil, status.Error(codes.InvalidArgument, "sequence: stream sequences start at 1")
		}
		seq = to.Sequence
	case *pb.ResetGroupRequest_Time:
		if err := to.Time.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "time: %v", err)
		}
		var err error
		if seq, err = a.sequenceAt(ctx, to.Time.AsTime()); err != nil {
			return nil, err
		}
	case *pb.ResetGroupRequest_New:
		stream, err := js.Stream(ctx, name)
		if err != nil {
			return nil, logError(err)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, logError(err)
		}
		seq = info.State.LastSeq + 1
	default:
		return nil, status.Error(codes.InvalidArgument, "to: give a sequence, a time or new")
	}
	if _, err := js.ResetConsumerToSequence(ctx, name, req.GetName(), seq); err != nil {
		return nil, logError(err)
	}
	if err := a.s.groups.sync(ctx, req.GetName(), new(seq-1)); err != nil {
		return nil, status.Errorf(codes.Unavailable, "group %s moved, but its record was not written: reset it again (event log: %v)", req.GetName(), err)
	}
	// What the group acked of a record before the move must not make it skip that record's events
	// when it gets them again.
	if err := a.s.log.ForgetGroup(ctx, req.GetName()); err != nil {
		return nil, logError(err)
	}
	a.s.logger.Info("consumer group reset", "group", req.GetName(), "sequence", seq, "by", principalName(ctx))
	return a.GetGroup(ctx, &pb.GetGroupRequest{Name: req.GetName()})
}

// sequenceAt is the stream sequence of the first record stored at or after t; past the end, the
// sequence the next record will take.
func (a adminService) sequenceAt(ctx context.Context, t time.Time) (uint64, error) {
	js, name := a.s.log.JetStream(), a.s.log.Stream()
	c, err := js.CreateConsumer(ctx, name, jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, InactiveThreshold: time.Minute, // removed below; this if the bridge stops first
	})
	if err != nil {
		return 0, logError(err)
	}
	defer func() { _ = js.DeleteConsumer(context.WithoutCancel(ctx), name, c.CachedInfo().Name) }()
	msgs, err := c.FetchNoWait(1)
	if err != nil {
		return 0, logError(err)
	}
	for msg := range msgs.Messages() {
		md, err := msg.Metadata()
		if err != nil {
			return 0, logError(err)
		}
		return md.Sequence.Stream, nil
	}
	if err := msgs.Error(); err != nil {
		return 0, logError(err)
	}
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return 0, logError(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, logError(err)
	}
	return info.State.LastSeq + 1, nil
}

// info is a group's consumer: NOT_FOUND when the log has no group of that name.
func (a adminService) info(ctx context.Context, name string) (*jetstream.ConsumerInfo, error) {
	if err := validGroupName(name); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "name: %v", err)
	}
	if err := auth.AllowGroupAdmin(ctx, name); err != nil {
		return nil, err
	}
	c, err := a.s.log.JetStream().Consumer(ctx, a.s.log.Stream(), name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, status.Errorf(codes.NotFound, "no consumer group %s", name)
	}
	if err != nil {
		return nil, logError(err)
	}
	ci := c.CachedInfo()
	if _, ok := a.group(ci); !ok {
		return nil, status.Errorf(codes.NotFound, "no consumer group %s (a consumer of that name is not the bridge's)", name)
	}
	return ci, nil
}

// group describes a consumer, if it is one of the bridge's groups.
func (a adminService) group(ci *jetstream.ConsumerInfo) (*pb.Group, bool) {
	if ci.Config.Durable == "" {
		return nil, false
	}
	settings, err := settingsOf(ci.Config)
	if err != nil {
		return nil, false
	}
	return &pb.Group{
		Name:               ci.Name,
		Filter:             settings.Filter,
		Decide:             settings.Decide,
		Order:              settings.Order,
		AckWait:            settings.AckWait,
		MaxDeliveries:      settings.MaxDeliveries,
		MembersHere:        int32(a.s.Members(ci.Name)),
		MembersElsewhere:   int32(a.s.presence.elsewhere(ci.Name)),
		PendingRecords:     ci.NumPending,
		UnackedRecords:     uint64(ci.NumAckPending),
		RedeliveredRecords: uint64(ci.NumRedelivered),
		AckFloorSequence:   ci.AckFloor.Stream,
		DeliveredSequence:  ci.Delivered.Stream,
		Created:            timestamppb.New(ci.Created),
	}, true
}

// logError is an event log failure as a status: UNAVAILABLE with the cause (admin callers are the
// operators), or the context's end.
func logError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Unavailable, "event log: %v", err)
}

func validGroupName(name string) error {
	if !groupNameRE.MatchString(name) {
		return fmt.Errorf("%q is no group name: [A-Za-z0-9_-]{1,64}", name)
	}
	return nil
}

// principalName names the caller for the log.
func principalName(ctx context.Context) string {
	if p := auth.FromContext(ctx); p != nil {
		return p.Name
	}
	return "(no token)"
}
