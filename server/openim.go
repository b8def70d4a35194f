package server

import (
	"context"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// OpenIM command names with a typed RPC.
const (
	openimAfterSetGroupInfoEx  = "callbackAfterSetGroupInfoExCommand"
	openimBeforeSetGroupInfoEx = "callbackBeforeSetGroupInfoExCommand"
	openimAfterSetGroupInfo    = "callbackAfterSetGroupInfoCommand"
	openimBeforeSetGroupInfo   = "callbackBeforeSetGroupInfoCommand"
	openimAfterQuitGroup       = "callbackAfterQuitGroupCommand"
	openimAfterKickGroup       = "callbackAfterKickGroupCommand"
)

// openimRefuseCode is the errCode sent with a refusal whose verdict gave none: with errCode 0 the
// client would be handed a refusal that reads as success.
const openimRefuseCode = 1

type openimService struct {
	pb.UnimplementedOpenIMCallbackServiceServer
	s *Server
}

// openimPhase: every command starting "callbackBefore" is a before-callback, except OpenIM's
// after-revoke callback, which is named callbackBeforeAfterMsgCommand.
func openimPhase(cmd string) pb.Phase {
	if strings.HasPrefix(cmd, "callbackBefore") && cmd != "callbackBeforeAfterMsgCommand" {
		return pb.Phase_PHASE_BEFORE
	}
	return pb.Phase_PHASE_AFTER
}

// event starts an OpenIM event. The operationID header wins over the body's, which the real server
// leaves empty.
func (o openimService) event(ctx context.Context, cmd, bodyOperationID string, req proto.Message) *pb.Event {
	ev := newEvent(ctx, pb.Source_SOURCE_OPENIM, cmd, openimPhase(cmd), req)
	if ev.Metadata.OperationId == "" {
		ev.Metadata.OperationId = bodyOperationID
	}
	return ev
}

// Callback stores any OpenIM command without a typed RPC, with its raw body.
func (o openimService) Callback(ctx context.Context, req *pb.OpenIMCallbackRequest) (*pb.OpenIMCallbackResponse, error) {
	cmd := req.GetCommand()
	if cmd == "" {
		cmd = req.GetCallbackCommand()
	}
	if cmd == "" {
		return nil, errMissingCommand
	}
	ev := o.event(ctx, cmd, req.GetOperationId(), req)
	v, err := o.s.ingest(ctx, ev)
	if err != nil {
		return nil, err
	}
	return openimAnswer(v), nil
}

func (o openimService) AfterSetGroupInfoEx(ctx context.Context, req *pb.OpenIMSetGroupInfoExRequest) (*pb.OpenIMCallbackResponse, error) {
	v, err := o.setGroupInfoEx(ctx, openimAfterSetGroupInfoEx, req)
	if err != nil {
		return nil, err
	}
	return openimAnswer(v), nil
}

func (o openimService) BeforeSetGroupInfoEx(ctx context.Context, req *pb.OpenIMSetGroupInfoExRequest) (*pb.OpenIMSetGroupInfoExResponse, error) {
	v, err := o.setGroupInfoEx(ctx, openimBeforeSetGroupInfoEx, req)
	if err != nil {
		return nil, err
	}
	a := openimAnswer(v)
	// The server copies every group field of the answer over the change: echo the request.
	resp := &pb.OpenIMSetGroupInfoExResponse{
		ActionCode: a.ActionCode, ErrCode: a.ErrCode, ErrMsg: a.ErrMsg, ErrDlt: a.ErrDlt, NextCode: a.NextCode,
		GroupId:           req.GetGroupId(),
		GroupName:         req.GroupName,
		Notification:      req.Notification,
		Introduction:      req.Introduction,
		FaceUrl:           req.FaceUrl,
		Ex:                req.Ex,
		NeedVerification:  req.NeedVerification,
		LookMemberInfo:    req.LookMemberInfo,
		ApplyMemberFriend: req.ApplyMemberFriend,
	}
	if r := v.GetGroupInfo(); r != nil && !refused(v) {
		replace(&resp.GroupName, r.Name)
		replace(&resp.Notification, r.Notification)
		replace(&resp.Introduction, r.Introduction)
		replace(&resp.FaceUrl, r.FaceUrl)
		replace(&resp.Ex, r.Ex)
		replace(&resp.NeedVerification, r.NeedVerification)
		replace(&resp.LookMemberInfo, r.LookMemberInfo)
		replace(&resp.ApplyMemberFriend, r.ApplyMemberFriend)
	}
	return resp, nil
}

func (o openimService) setGroupInfoEx(ctx context.Context, cmd string, req *pb.OpenIMSetGroupInfoExRequest) (*pb.Verdict, error) {
	if req.GetGroupId() == "" {
		return nil, missingField("groupID")
	}
	ev := o.event(ctx, cmd, req.GetOperationId(), req)
	ev.Kind = pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED
	ev.Payload = &pb.Event_GroupInfoChanged{GroupInfoChanged: &pb.GroupInfoChanged{
		GroupId:           req.GetGroupId(),
		Name:              req.GroupName,
		Notification:      req.Notification,
		Introduction:      req.Introduction,
		FaceUrl:           req.FaceUrl,
		Ex:                req.Ex,
		NeedVerification:  req.NeedVerification,
		LookMemberInfo:    req.LookMemberInfo,
		ApplyMemberFriend: req.ApplyMemberFriend,
	}}
	return o.s.ingest(ctx, ev)
}

func (o openimService) AfterSetGroupInfo(ctx context.Context, req *pb.OpenIMSetGroupInfoRequest) (*pb.OpenIMCallbackResponse, error) {
	v, err := o.setGroupInfo(ctx, openimAfterSetGroupInfo, req)
	if err != nil {
		return nil, err
	}
	return openimAnswer(v), nil
}

func (o openimService) BeforeSetGroupInfo(ctx context.Context, req *pb.OpenIMSetGroupInfoRequest) (*pb.OpenIMSetGroupInfoResponse, error) {
	v, err := o.setGroupInfo(ctx, openimBeforeSetGroupInfo, req)
	if err != nil {
		return nil, err
	}
	a := openimAnswer(v)
	// The server copies groupID, groupName, faceURL and introduction of the answer over the change
	// unconditionally, and ex and the int settings when not null: echo the request.
	resp := &pb.OpenIMSetGroupInfoResponse{
		ActionCode: a.ActionCode, ErrCode: a.ErrCode, ErrMsg: a.ErrMsg, ErrDlt: a.ErrDlt, NextCode: a.NextCode,
		GroupId:           req.GetGroupId(),
		GroupName:         req.GetGroupName(),
		Notification:      req.GetNotification(),
		Introduction:      req.GetIntroduction(),
		FaceUrl:           req.GetFaceUrl(),
		Ex:                req.Ex,
		NeedVerification:  req.NeedVerification,
		LookMemberInfo:    req.LookMemberInfo,
		ApplyMemberFriend: req.ApplyMemberFriend,
	}
	if r := v.GetGroupInfo(); r != nil && !refused(v) {
		replaceValue(&resp.GroupName, r.Name)
		replaceValue(&resp.Notification, r.Notification)
		replaceValue(&resp.Introduction, r.Introduction)
		replaceValue(&resp.FaceUrl, r.FaceUrl)
		replace(&resp.Ex, r.Ex)
		replace(&resp.NeedVerification, r.NeedVerification)
		replace(&resp.LookMemberInfo, r.LookMemberInfo)
		replace(&resp.ApplyMemberFriend, r.ApplyMemberFriend)
	}
	return resp, nil
}

// setGroupInfo: in the non-Ex API the string fields are always sent and "" means "not changed", so
// only non-empty ones are set on the canonical event.
func (o openimService) setGroupInfo(ctx context.Context, cmd string, req *pb.OpenIMSetGroupInfoRequest) (*pb.Verdict, error) {
	if req.GetGroupId() == "" {
		return nil, missingField("groupID")
	}
	ev := o.event(ctx, cmd, req.GetOperationId(), req)
	ev.Kind = pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED
	ev.Payload = &pb.Event_GroupInfoChanged{GroupInfoChanged: &pb.GroupInfoChanged{
		GroupId:           req.GetGroupId(),
		Name:              nonEmpty(req.GetGroupName()),
		Notification:      nonEmpty(req.GetNotification()),
		Introduction:      nonEmpty(req.GetIntroduction()),
		FaceUrl:           nonEmpty(req.GetFaceUrl()),
		Ex:                req.Ex,
		NeedVerification:  req.NeedVerification,
		LookMemberInfo:    req.LookMemberInfo,
		ApplyMemberFriend: req.ApplyMemberFriend,
	}}
	return o.s.ingest(ctx, ev)
}

func (o openimService) AfterQuitGroup(ctx context.Context, req *pb.OpenIMQuitGroupRequest) (*pb.OpenIMCallbackResponse, error) {
	if req.GetGroupId() == "" {
		return nil, missingField("groupID")
	}
	ev := o.event(ctx, openimAfterQuitGroup, "", req)
	ev.Kind = pb.EventKind_EVENT_KIND_MEMBER_QUIT
	ev.Payload = &pb.Event_MemberQuit{MemberQuit: &pb.MemberQuit{
		GroupId: req.GetGroupId(),
		UserIds: []string{req.GetUserId()},
		Reason:  pb.QuitReason_QUIT_REASON_QUIT,
	}}
	v, err := o.s.ingest(ctx, ev)
	if err != nil {
		return nil, err
	}
	return openimAnswer(v), nil
}

func (o openimService) AfterKickGroup(ctx context.Context, req *pb.OpenIMKickGroupRequest) (*pb.OpenIMCallbackResponse, error) {
	if req.GetGroupId() == "" {
		return nil, missingField("groupID")
	}
	ev := o.event(ctx, openimAfterKickGroup, "", req)
	ev.Kind = pb.EventKind_EVENT_KIND_MEMBER_QUIT
	ev.Payload = &pb.Event_MemberQuit{MemberQuit: &pb.MemberQuit{
		GroupId:    req.GetGroupId(),
		UserIds:    req.GetKickedUserIds(),
		Reason:     pb.QuitReason_QUIT_REASON_KICKED,
		KickReason: req.GetReason(),
	}}
	v, err := o.s.ingest(ctx, ev)
	if err != nil {
		return nil, err
	}
	return openimAnswer(v), nil
}

// openimAnswer maps a verdict to OpenIM's answer. The server refuses only on actionCode 0 with
// nextCode 1.
func openimAnswer(v *pb.Verdict) *pb.OpenIMCallbackResponse {
	if !refused(v) {
		return &pb.OpenIMCallbackResponse{}
	}
	code := v.GetErrorCode()
	if code == 0 {
		code = openimRefuseCode
	}
	return &pb.OpenIMCallbackResponse{ErrCode: code, ErrMsg: v.GetMessage(), ErrDlt: v.GetDetail(), NextCode: 1}
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// replace sets *dst to r when r is set.
func replace[T any](dst **T, r *T) {
	if r != nil {
		*dst = r
	}
}

func replaceValue[T any](dst *T, r *T) {
	if r != nil {
		*dst = *r
	}
}
