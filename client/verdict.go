package client

import (
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Allow lets the user's action go ahead.
func Allow() *pb.Verdict { return &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW} }

// Refuse refuses the user's action with an error code and message the IM server shows its client
// (OpenIM errCode and errMsg; Tencent ErrorCode, 1 or 10100-10200, and ErrorInfo). Code 0 is the
// vendor's generic refusal.
func Refuse(code int32, message string) *pb.Verdict {
	return &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, ErrorCode: code, Message: message}
}

// AllowWith lets a change of a group's profile go ahead with some of its fields replaced: each field
// set in replace (name, introduction, face_url, ex and OpenIM's three settings) is applied instead
// of the requested one. Only OpenIM's before-set-group-info callbacks take replacements; the
// bridge refuses them elsewhere (the stream ends with INVALID_ARGUMENT naming the field).
func AllowWith(replace *pb.GroupInfoChanged) *pb.Verdict {
	return &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW, GroupInfo: replace}
}

// NewGroupName is the group name an event asks for (or reports), whichever the vendor: ok is false
// when the event does not change the name.
func NewGroupName(ev *pb.Event) (name string, ok bool) {
	g := ev.GetGroupInfoChanged()
	if g == nil || g.Name == nil {
		return "", false
	}
	return g.GetName(), true
}

// Kinds is a filter on event kinds.
func Kinds(kinds ...pb.EventKind) *pb.EventFilter { return &pb.EventFilter{Kinds: kinds} }

// Commands is a filter on the vendors' callback commands (callbackBeforeSetGroupInfoCommand,
// Group.CallbackAfterMemberExit, ...).
func Commands(commands ...string) *pb.EventFilter { return &pb.EventFilter{Commands: commands} }
