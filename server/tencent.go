package server

import (
	"context"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Tencent command names with a typed RPC.
const (
	tencentAfterGroupInfoChanged = "Group.CallbackAfterGroupInfoChanged"
	tencentAfterMemberExit       = "Group.CallbackAfterMemberExit"
)

// Tencent before-callback refusal codes: 1 refuses (the client sees 10016); a code in
// [10100, 10200] refuses and is handed to the client with ErrorInfo.
const (
	tencentRefuseCode    = 1
	tencentCustomCodeMin = 10100
	tencentCustomCodeMax = 10200
)

type tencentService struct {
	pb.UnimplementedTencentCallbackServiceServer
	s *Server
}

// tencentPhase: Tencent's before-callbacks are named <Domain>.CallbackBefore...
func tencentPhase(cmd string) pb.Phase {
	if strings.Contains(cmd, ".CallbackBefore") {
		return pb.Phase_PHASE_BEFORE
	}
	return pb.Phase_PHASE_AFTER
}

func (t tencentService) event(ctx context.Context, cmd string, req proto.Message) *pb.Event {
	return newEvent(ctx, pb.Source_SOURCE_TENCENT, cmd, tencentPhase(cmd), req)
}

// Callback stores any Tencent command without a typed RPC, with its raw body.
func (t tencentService) Callback(ctx context.Context, req *pb.TencentCallbackRequest) (*pb.TencentCallbackResponse, error) {
	cmd := req.GetCommand()
	if cmd == "" {
		cmd = req.GetCallbackCommand()
	}
	if cmd == "" {
		return nil, errMissingCommand
	}
	v, err := t.s.ingest(ctx, t.event(ctx, cmd, req))
	if err != nil {
		return nil, err
	}
	return tencentAnswer(v), nil
}

func (t tencentService) AfterGroupInfoChanged(ctx context.Context, req *pb.TencentGroupInfoChangedRequest) (*pb.TencentCallbackResponse, error) {
	if req.GetGroupId() == "" {
		return nil, missingField("GroupId")
	}
	ev := t.event(ctx, tencentAfterGroupInfoChanged, req)
	gi := &pb.GroupInfoChanged{
		GroupId:        req.GetGroupId(),
		GroupType:      req.GetType(),
		OperatorUserId: nonEmpty(req.GetOperatorAccount()),
		Name:           req.Name,
		Notification:   req.Notification,
		Introduction:   req.Introduction,
		FaceUrl:        req.FaceUrl,
	}
	for _, kv := range req.GetUserDefinedDataList() {
		gi.UserDefinedData = append(gi.UserDefinedData, &pb.KeyValue{Key: kv.GetKey(), Value: kv.GetValue()})
	}
	ev.Kind = pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED
	ev.Payload = &pb.Event_GroupInfoChanged{GroupInfoChanged: gi}
	v, err := t.s.ingest(ctx, ev)
	if err != nil {
		return nil, err
	}
	return tencentAnswer(v), nil
}

func (t tencentService) AfterMemberExit(ctx context.Context, req *pb.TencentMemberExitRequest) (*pb.TencentCallbackResponse, error) {
	if req.GetGroupId() == "" {
		return nil, missingField("GroupId")
	}
	ev := t.event(ctx, tencentAfterMemberExit, req)
	mq := &pb.MemberQuit{
		GroupId:   req.GetGroupId(),
		GroupType: req.GetType(),
		Reason:    tencentQuitReason(req.GetExitType()),
		// The kicker, or for a quit the member who left.
		OperatorUserId: nonEmpty(req.GetOperatorAccount()),
	}
	for _, m := range req.GetExitMemberList() {
		mq.UserIds = append(mq.UserIds, m.GetMemberAccount())
	}
	ev.Kind = pb.EventKind_EVENT_KIND_MEMBER_QUIT
	ev.Payload = &pb.Event_MemberQuit{MemberQuit: mq}
	v, err := t.s.ingest(ctx, ev)
	if err != nil {
		return nil, err
	}
	return tencentAnswer(v), nil
}

func tencentQuitReason(exitType string) pb.QuitReason {
	switch {
	case strings.EqualFold(exitType, "Kicked"):
		return pb.QuitReason_QUIT_REASON_KICKED
	case strings.EqualFold(exitType, "Quit"):
		return pb.QuitReason_QUIT_REASON_QUIT
	}
	return pb.QuitReason_QUIT_REASON_UNSPECIFIED
}

// tencentAnswer maps a verdict to Tencent's answer: ErrorCode 0 allows; a refusal carries 1 or a
// custom code in [10100, 10200].
func tencentAnswer(v *pb.Verdict) *pb.TencentCallbackResponse {
	if !refused(v) {
		return &pb.TencentCallbackResponse{ActionStatus: "OK"}
	}
	code := v.GetErrorCode()
	if code < tencentCustomCodeMin || code > tencentCustomCodeMax {
		code = tencentRefuseCode
	}
	return &pb.TencentCallbackResponse{ActionStatus: "OK", ErrorCode: code, ErrorInfo: v.GetMessage()}
}
