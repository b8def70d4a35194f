package server

import (
	"context"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/wirejson"
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
	v, _, err := o.setGroupInfo(ctx, openimAfterSetGroupInfoEx, req.GetOperationId(), req, exGroupInfo(req))
	if err != nil {
		return nil, err
	}
	return openimAnswer(v), nil
}

// BeforeSetGroupInfoEx answers with every group field: the server copies each one of the answer
// over the change (a null one un-sets it), so the answer echoes the request, with a decider's
// replacements applied.
func (o openimService) BeforeSetGroupInfoEx(ctx context.Context, req *pb.OpenIMSetGroupInfoExRequest) (*pb.OpenIMSetGroupInfoExResponse, error) {
	v, gi, err := o.setGroupInfo(ctx, openimBeforeSetGroupInfoEx, req.GetOperationId(), req, exGroupInfo(req))
	if err != nil {
		return nil, err
	}
	return exAnswer(openimAnswer(v), applied(gi, replacements(v))), nil
}

func (o openimService) AfterSetGroupInfo(ctx context.Context, req *pb.OpenIMSetGroupInfoRequest) (*pb.OpenIMCallbackResponse, error) {
	v, _, err := o.setGroupInfo(ctx, openimAfterSetGroupInfo, req.GetOperationId(), req, plainGroupInfo(req, false))
	if err != nil {
		return nil, err
	}
	return openimAnswer(v), nil
}

// BeforeSetGroupInfo answers with the group fields: the server copies groupID, groupName, faceURL
// and introduction of the answer over the change unconditionally ("" keeps the current value), and
// ex and the int settings when not null.
func (o openimService) BeforeSetGroupInfo(ctx context.Context, req *pb.OpenIMSetGroupInfoRequest) (*pb.OpenIMSetGroupInfoResponse, error) {
	v, gi, err := o.setGroupInfo(ctx, openimBeforeSetGroupInfo, req.GetOperationId(), req, plainGroupInfo(req, true))
	if err != nil {
		return nil, err
	}
	return plainAnswer(openimAnswer(v), gi, replacements(v)), nil
}

// exAnswer is the before-set-group-info-ex answer: a with every group field of gi (unset ones null).
func exAnswer(a *pb.OpenIMCallbackResponse, gi *pb.GroupInfoChanged) *pb.OpenIMSetGroupInfoExResponse {
	return &pb.OpenIMSetGroupInfoExResponse{
		ActionCode: a.ActionCode, ErrCode: a.ErrCode, ErrMsg: a.ErrMsg, ErrDlt: a.ErrDlt, NextCode: a.NextCode,
		GroupId:           gi.GroupId,
		GroupName:         gi.Name,
		Notification:      gi.Notification,
		Introduction:      gi.Introduction,
		FaceUrl:           gi.FaceUrl,
		Ex:                gi.Ex,
		NeedVerification:  gi.NeedVerification,
		LookMemberInfo:    gi.LookMemberInfo,
		ApplyMemberFriend: gi.ApplyMemberFriend,
	}
}

// plainAnswer is the before-set-group-info answer to the change gi, with a decider's replacements
// (nil: none). The server copies the answer's groupID, groupName, faceURL and introduction over
// the change whatever they are ("" keeps the group's current value), so those echo the change with
// the replacements applied. It copies ex and the three settings whenever they are not null, and its
// request sends "" and 0 for the ones the user did not touch: so they are null unless replaced, and
// the request's values (the user's change) stand.
func plainAnswer(a *pb.OpenIMCallbackResponse, gi, repl *pb.GroupInfoChanged) *pb.OpenIMSetGroupInfoResponse {
	out := applied(gi, repl)
	if repl == nil {
		repl = &pb.GroupInfoChanged{}
	}
	return &pb.OpenIMSetGroupInfoResponse{
		ActionCode: a.ActionCode, ErrCode: a.ErrCode, ErrMsg: a.ErrMsg, ErrDlt: a.ErrDlt, NextCode: a.NextCode,
		GroupId:           gi.GroupId,
		GroupName:         out.GetName(),
		Notification:      gi.GetNotification(),
		Introduction:      out.GetIntroduction(),
		FaceUrl:           out.GetFaceUrl(),
		Ex:                repl.Ex,
		NeedVerification:  repl.NeedVerification,
		LookMemberInfo:    repl.LookMemberInfo,
		ApplyMemberFriend: repl.ApplyMemberFriend,
	}
}

// OpenIMErrorAnswer is OpenIM's answer to a callback the bridge could not take: actionCode 1, so that
// OpenIM goes ahead rather than blocking the user on a bridge problem. The two before-set-group-info
// callbacks are the exception (protocol/openim.md): OpenIM copies the answer's group fields over the
// change even then, so the answer echoes the request's fields. When the body does not decode (or has
// no group id) there is nothing safe to echo and the change would fail anyway: the answer refuses it
// with the error.
func OpenIMErrorAnswer(command string, body []byte, code int32, msg string) proto.Message {
	failed := &pb.OpenIMCallbackResponse{ActionCode: 1, ErrCode: code, ErrMsg: msg}
	refusal := &pb.OpenIMCallbackResponse{ErrCode: code, ErrMsg: msg, NextCode: 1}
	switch command {
	case openimBeforeSetGroupInfoEx:
		var req pb.OpenIMSetGroupInfoExRequest
		if wirejson.Unmarshal(body, &req) != nil || req.GroupId == "" {
			return exAnswer(refusal, &pb.GroupInfoChanged{}) // never echo a partly decoded change
		}
		return exAnswer(failed, exGroupInfo(&req))
	case openimBeforeSetGroupInfo:
		var req pb.OpenIMSetGroupInfoRequest
		if wirejson.Unmarshal(body, &req) != nil || req.GroupId == "" {
			return plainAnswer(refusal, &pb.GroupInfoChanged{}, nil)
		}
		return plainAnswer(failed, plainGroupInfo(&req, true), nil)
	}
	return failed
}

// exGroupInfo: in the Ex API a changed field is set and an unchanged one null, as in the event.
func exGroupInfo(req *pb.OpenIMSetGroupInfoExRequest) *pb.GroupInfoChanged {
	return &pb.GroupInfoChanged{
		GroupId:           req.GetGroupId(),
		Name:              req.GroupName,
		Notification:      req.Notification,
		Introduction:      req.Introduction,
		FaceUrl:           req.FaceUrl,
		Ex:                req.Ex,
		NeedVerification:  req.NeedVerification,
		LookMemberInfo:    req.LookMemberInfo,
		ApplyMemberFriend: req.ApplyMemberFriend,
	}
}

// plainGroupInfo: in the old API the string fields are always sent and "" means "not changed", so
// only non-empty ones are set on the event. The after-callback sends ex and the settings only when
// changed (null otherwise), like the Ex API. The before-callback sends them always, "" and 0 for
// the ones not changed: there, "" and 0 read as not changed (allZero), so a change to "" or 0 does
// not show on that route (GroupInfoChanged says so).
func plainGroupInfo(req *pb.OpenIMSetGroupInfoRequest, allZero bool) *pb.GroupInfoChanged {
	gi := &pb.GroupInfoChanged{
		GroupId:           req.GetGroupId(),
		Name:              nonEmpty(req.GetGroupName()),
		Notification:      nonEmpty(req.GetNotification()),
		Introduction:      nonEmpty(req.GetIntroduction()),
		FaceUrl:           nonEmpty(req.GetFaceUrl()),
		Ex:                req.Ex,
		NeedVerification:  req.NeedVerification,
		LookMemberInfo:    req.LookMemberInfo,
		ApplyMemberFriend: req.ApplyMemberFriend,
	}
	if allZero {
		gi.Ex = nonEmpty(req.GetEx())
		gi.NeedVerification = nonZero(req.GetNeedVerification())
		gi.LookMemberInfo = nonZero(req.GetLookMemberInfo())
		gi.ApplyMemberFriend = nonZero(req.GetApplyMemberFriend())
	}
	return gi
}

// setGroupInfo stores a set-group-info callback and returns its verdict and canonical payload.
func (o openimService) setGroupInfo(ctx context.Context, cmd, operationID string, req proto.Message, gi *pb.GroupInfoChanged) (*pb.Verdict, *pb.GroupInfoChanged, error) {
	if gi.GroupId == "" {
		return nil, nil, missingField("groupID")
	}
	ev := o.event(ctx, cmd, operationID, req)
	ev.Kind = pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED
	ev.Payload = &pb.Event_GroupInfoChanged{GroupInfoChanged: gi}
	v, err := o.s.ingest(ctx, ev)
	return v, gi, err
}

// replacements are the fields an allowing verdict replaces; nil for none (and for a refusal).
func replacements(v *pb.Verdict) *pb.GroupInfoChanged {
	if refused(v) {
		return nil
	}
	return v.GetGroupInfo()
}

// applied is the change the IM server should apply: the request's, with the replacement fields
// (nil: none) on top. Verdicts that would replace what cannot be are refused when they arrive
// (checkVerdict), and the group id is kept here all the same.
func applied(gi, repl *pb.GroupInfoChanged) *pb.GroupInfoChanged {
	if repl == nil {
		return gi
	}
	out := proto.Clone(gi).(*pb.GroupInfoChanged)
	proto.Merge(out, repl)
	out.GroupId = gi.GroupId
	return out
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

func nonZero(n int32) *int32 {
	if n == 0 {
		return nil
	}
	return &n
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
