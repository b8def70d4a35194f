package server

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/imbridge/imbridge/eventlog"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Event subjects are eventlog.SubjectPrefix.<source>.<phase>.<kind>.<command>, so a consumer group's
// filter narrows what the log delivers to it. The subject is only a coarse cut (a command token may be
// shared by two odd command names): matches() on the decoded event is the exact test.

// maxFilterSubjects bounds the subjects one consumer filters on; a larger product of lists takes
// everything and relies on matches().
const maxFilterSubjects = 64

const allSubjects = eventlog.SubjectPrefix + ".>"

var groupNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func subjectFor(ev *pb.Event) string {
	var b strings.Builder
	b.Grow(len(eventlog.SubjectPrefix) + 40 + len(ev.Command))
	b.WriteString(eventlog.SubjectPrefix)
	b.WriteByte('.')
	b.WriteString(sourceToken(ev.Source))
	b.WriteByte('.')
	b.WriteString(phaseToken(ev.Phase))
	b.WriteByte('.')
	b.WriteString(kindToken(ev.Kind))
	b.WriteByte('.')
	writeCommandToken(&b, ev.Command)
	return b.String()
}

func sourceToken(s pb.Source) string {
	switch s {
	case pb.Source_SOURCE_OPENIM:
		return "openim"
	case pb.Source_SOURCE_TENCENT:
		return "tencent"
	}
	return "unknown"
}

func phaseToken(p pb.Phase) string {
	if p == pb.Phase_PHASE_BEFORE {
		return "before"
	}
	return "after"
}

func kindToken(k pb.EventKind) string {
	switch k {
	case pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED:
		return "group_info_changed"
	case pb.EventKind_EVENT_KIND_MEMBER_QUIT:
		return "member_quit"
	}
	return "raw"
}

// writeCommandToken writes cmd as one subject token: characters a NATS subject cannot hold in a
// token (".", "*", ">", whitespace, ...) become "_".
func writeCommandToken(b *strings.Builder, cmd string) {
	if cmd == "" {
		b.WriteByte('_')
		return
	}
	for i := 0; i < len(cmd); i++ {
		if c := cmd[i]; tokenByte(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
}

// tokenByte reports whether c stands for itself in a command's subject token.
func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// filterSubjects turns a filter into the consumer's subject filter.
func filterSubjects(f *pb.EventFilter) []string {
	all := []string{allSubjects}
	if f == nil {
		return all
	}
	sources := tokens(f.GetSources(), sourceToken)
	kinds := tokens(f.GetKinds(), kindToken)
	commands := tokens(f.GetCommands(), func(c string) string {
		var b strings.Builder
		writeCommandToken(&b, c)
		return b.String()
	})
	if len(sources)*len(kinds)*len(commands) > maxFilterSubjects {
		return all
	}
	var out []string
	for _, s := range sources {
		for _, k := range kinds {
			for _, c := range commands {
				out = append(out, fmt.Sprintf("%s.%s.*.%s.%s", eventlog.SubjectPrefix, s, k, c))
			}
		}
	}
	if len(out) == 1 && out[0] == eventlog.SubjectPrefix+".*.*.*.*" {
		return all
	}
	return out
}

// tokens maps a filter list to distinct subject tokens; an empty list is the wildcard.
func tokens[T comparable](list []T, token func(T) string) []string {
	if len(list) == 0 {
		return []string{"*"}
	}
	var out []string
	for _, v := range list {
		if t := token(v); !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// matches is the exact filter test.
func matches(f *pb.EventFilter, ev *pb.Event) bool {
	if f == nil {
		return true
	}
	if len(f.Kinds) > 0 && !slices.Contains(f.Kinds, ev.Kind) {
		return false
	}
	if len(f.Sources) > 0 && !slices.Contains(f.Sources, ev.Source) {
		return false
	}
	if len(f.Commands) > 0 && !slices.Contains(f.Commands, ev.Command) {
		return false
	}
	if len(f.GroupIds) > 0 {
		gid := groupID(ev)
		if gid == "" || !slices.Contains(f.GroupIds, gid) {
			return false
		}
	}
	return true
}

// groupID is the group an event is about, "" for events without a typed payload.
func groupID(ev *pb.Event) string {
	switch p := ev.Payload.(type) {
	case *pb.Event_GroupInfoChanged:
		return p.GroupInfoChanged.GetGroupId()
	case *pb.Event_MemberQuit:
		return p.MemberQuit.GetGroupId()
	}
	return ""
}

func validateSubscription(sub *pb.Subscription) error {
	if sub == nil {
		return fmt.Errorf("first message must be a subscription")
	}
	if sub.Group != "" && !groupNameRE.MatchString(sub.Group) {
		return fmt.Errorf("group %q: want 1-64 of A-Z a-z 0-9 _ -", sub.Group)
	}
	if sub.Decide && sub.Group == "" {
		return fmt.Errorf("decide needs a group: verdicts come from consumer groups")
	}
	if sub.Order != pb.Order_ORDER_UNSPECIFIED {
		switch {
		case !defined(sub.Order):
			return fmt.Errorf("order %d: unknown", sub.Order)
		case sub.Group == "":
			return fmt.Errorf("order needs a group: a live tail gets events in log order already")
		case sub.Decide:
			return fmt.Errorf("order and decide: a before-callback cannot wait behind its IM group's earlier events, its IM server is waiting")
		}
	}
	if sub.GetMaxInFlight() > MaxInFlight {
		return fmt.Errorf("max_in_flight %d: at most %d", sub.GetMaxInFlight(), MaxInFlight)
	}
	if d := sub.GetAckWait(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return fmt.Errorf("ack_wait: invalid duration")
		}
		if w := d.AsDuration(); w > 0 && w < MinAckWait {
			return fmt.Errorf("ack_wait %v: at least %v (0: the group's)", w, MinAckWait)
		}
	}
	if sub.GetMaxDeliveries() > MaxDeliveries {
		return fmt.Errorf("max_deliveries %d: at most %d", sub.GetMaxDeliveries(), MaxDeliveries)
	}
	starts := 0
	if sub.Start != pb.StartPosition_START_POSITION_UNSPECIFIED {
		if !defined(sub.Start) {
			return fmt.Errorf("start %d: unknown", sub.Start)
		}
		starts++
	}
	if sub.StartSequence > 0 {
		starts++
	}
	if t := sub.GetStartTime(); t != nil {
		if err := t.CheckValid(); err != nil {
			return fmt.Errorf("start_time: %v", err)
		}
		starts++
	}
	if starts > 1 {
		return fmt.Errorf("start, start_sequence, start_time: give at most one")
	}
	for _, k := range sub.GetFilter().GetKinds() {
		if k == pb.EventKind_EVENT_KIND_UNSPECIFIED || !defined(k) {
			return fmt.Errorf("filter kinds: %v matches nothing", k)
		}
	}
	for _, s := range sub.GetFilter().GetSources() {
		if s == pb.Source_SOURCE_UNSPECIFIED || !defined(s) {
			return fmt.Errorf("filter sources: %v matches nothing", s)
		}
	}
	return nil
}

// subjectExact reports whether the consumer's subject filter already selects exactly the events f
// matches, so that delivery need not decode events to test them: no group ids (they are not in the
// subject), commands whose subject token is the command itself, and not so many combinations that
// the consumer takes everything.
func subjectExact(f *pb.EventFilter) bool {
	if len(f.GetGroupIds()) > 0 {
		return false
	}
	for _, c := range f.GetCommands() {
		// "_" stands for the characters a subject token cannot hold, so a command with one may
		// share its token with another command.
		if c == "" || strings.ContainsFunc(c, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
		}) {
			return false
		}
	}
	subjects := filterSubjects(f)
	return subjects[0] != allSubjects || len(f.GetKinds())+len(f.GetSources())+len(f.GetCommands()) == 0
}

// defined reports whether an enum value has a name in the proto.
func defined[E interface {
	protoreflect.Enum
	~int32
}](e E) bool {
	return e.Descriptor().Values().ByNumber(protoreflect.EnumNumber(e)) != nil
}
