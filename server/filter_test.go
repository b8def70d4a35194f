package server

import (
	"slices"
	"testing"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

func TestSubjectFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ev   *pb.Event
		want string
	}{
		{&pb.Event{Source: pb.Source_SOURCE_OPENIM, Phase: pb.Phase_PHASE_AFTER, Kind: pb.EventKind_EVENT_KIND_MEMBER_QUIT, Command: "callbackAfterQuitGroupCommand"},
			"imbridge.events.openim.after.member_quit.callbackAfterQuitGroupCommand"},
		{&pb.Event{Source: pb.Source_SOURCE_TENCENT, Phase: pb.Phase_PHASE_BEFORE, Kind: pb.EventKind_EVENT_KIND_RAW, Command: "Group.CallbackBeforeApplyJoinGroup"},
			"imbridge.events.tencent.before.raw.Group_CallbackBeforeApplyJoinGroup"},
		{&pb.Event{Source: pb.Source_SOURCE_OPENIM, Phase: pb.Phase_PHASE_AFTER, Kind: pb.EventKind_EVENT_KIND_RAW, Command: "a b*>.c"},
			"imbridge.events.openim.after.raw.a_b___c"},
	}
	for _, tt := range tests {
		if got := subjectFor(tt.ev); got != tt.want {
			t.Errorf("subjectFor(%v) = %s; want %s", tt.ev, got, tt.want)
		}
	}
}

func TestFilterSubjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		f    *pb.EventFilter
		want []string
	}{
		{nil, []string{"imbridge.events.>"}},
		{&pb.EventFilter{GroupIds: []string{"g"}}, []string{"imbridge.events.>"}},
		{&pb.EventFilter{Sources: []pb.Source{pb.Source_SOURCE_TENCENT}}, []string{"imbridge.events.tencent.*.*.*"}},
		{&pb.EventFilter{Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_MEMBER_QUIT, pb.EventKind_EVENT_KIND_RAW}, Commands: []string{"Group.X"}},
			[]string{"imbridge.events.*.*.member_quit.Group_X", "imbridge.events.*.*.raw.Group_X"}},
	}
	for _, tt := range tests {
		if got := filterSubjects(tt.f); !slices.Equal(got, tt.want) {
			t.Errorf("filterSubjects(%v) = %v; want %v", tt.f, got, tt.want)
		}
	}
	many := &pb.EventFilter{}
	for i := 0; i < 100; i++ {
		many.Commands = append(many.Commands, string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	if got := filterSubjects(many); !slices.Equal(got, []string{"imbridge.events.>"}) {
		t.Errorf("100 commands: %d subjects; want the catch-all", len(got))
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	quit := &pb.Event{Source: pb.Source_SOURCE_OPENIM, Command: "callbackAfterQuitGroupCommand", Kind: pb.EventKind_EVENT_KIND_MEMBER_QUIT,
		Payload: &pb.Event_MemberQuit{MemberQuit: &pb.MemberQuit{GroupId: "G1"}}}
	raw := &pb.Event{Source: pb.Source_SOURCE_TENCENT, Command: "Group.X", Kind: pb.EventKind_EVENT_KIND_RAW}
	tests := []struct {
		name      string
		f         *pb.EventFilter
		quit, raw bool
	}{
		{"empty", &pb.EventFilter{}, true, true},
		{"kind", &pb.EventFilter{Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_RAW}}, false, true},
		{"source", &pb.EventFilter{Sources: []pb.Source{pb.Source_SOURCE_OPENIM}}, true, false},
		{"command", &pb.EventFilter{Commands: []string{"Group.X"}}, false, true},
		{"group id", &pb.EventFilter{GroupIds: []string{"G1"}}, true, false},
		{"and", &pb.EventFilter{GroupIds: []string{"G1"}, Sources: []pb.Source{pb.Source_SOURCE_TENCENT}}, false, false},
	}
	for _, tt := range tests {
		if got := matches(tt.f, quit); got != tt.quit {
			t.Errorf("%s: matches(quit) = %v; want %v", tt.name, got, tt.quit)
		}
		if got := matches(tt.f, raw); got != tt.raw {
			t.Errorf("%s: matches(raw) = %v; want %v", tt.name, got, tt.raw)
		}
	}
}

func TestPhases(t *testing.T) {
	t.Parallel()
	for cmd, want := range map[string]pb.Phase{
		"callbackBeforeSetGroupInfoExCommand": pb.Phase_PHASE_BEFORE,
		"callbackAfterQuitGroupCommand":       pb.Phase_PHASE_AFTER,
		"callbackBeforeAfterMsgCommand":       pb.Phase_PHASE_AFTER, // OpenIM's after-revoke, misnamed
	} {
		if got := openimPhase(cmd); got != want {
			t.Errorf("openimPhase(%s) = %v; want %v", cmd, got, want)
		}
	}
	for cmd, want := range map[string]pb.Phase{
		"Group.CallbackBeforeCreateGroup": pb.Phase_PHASE_BEFORE,
		"C2C.CallbackBeforeSendMsg":       pb.Phase_PHASE_BEFORE,
		"Group.CallbackAfterMemberExit":   pb.Phase_PHASE_AFTER,
		"State.StateChange":               pb.Phase_PHASE_AFTER,
	} {
		if got := tencentPhase(cmd); got != want {
			t.Errorf("tencentPhase(%s) = %v; want %v", cmd, got, want)
		}
	}
}

func TestVendorAnswers(t *testing.T) {
	t.Parallel()
	refuse := func(code int32) *pb.Verdict {
		return &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, ErrorCode: code, Message: "m", Detail: "d"}
	}
	if a := openimAnswer(refuse(0)); a.ErrCode != openimRefuseCode || a.NextCode != 1 || a.ActionCode != 0 || a.ErrDlt != "d" {
		t.Errorf("openim refusal without code: %v", a)
	}
	for code, want := range map[int32]int32{0: 1, 1: 1, 5: 1, 10100: 10100, 10200: 10200, 10201: 1} {
		if a := tencentAnswer(refuse(code)); a.ErrorCode != want || a.ActionStatus != "OK" || a.ErrorInfo != "m" {
			t.Errorf("tencent refusal with code %d: %v; want ErrorCode %d", code, a, want)
		}
	}
	if a := tencentAnswer(allowVerdict); a.ErrorCode != 0 || a.ActionStatus != "OK" {
		t.Errorf("tencent allow: %v", a)
	}
}
