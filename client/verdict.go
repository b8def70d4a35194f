package client

import (
	"errors"
	"time"

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

// ChangedGroupName is the group name an event changes to (asks for, in a before-callback),
// whichever the vendor: ok is false when the event does not change the name.
func ChangedGroupName(ev *pb.Event) (name string, ok bool) {
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

// maxNackDelay is the bridge's bound on a nack's delay.
const maxNackDelay = time.Hour

// RetryAfter is err for a handler to return when the event should come again no sooner than d
// (at most an hour): the nack carries the delay. A plain error brings it back at once.
func RetryAfter(err error, d time.Duration) error { return &retryError{err: err, after: d} }

type retryError struct {
	err   error
	after time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// retryAfter is the delay RetryAfter put in err, if any, within the bridge's bounds.
func retryAfter(err error) (time.Duration, bool) {
	var r *retryError
	if !errors.As(err, &r) {
		return 0, false
	}
	return min(max(r.after, 0), maxNackDelay), true
}
