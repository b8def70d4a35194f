package server

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// loadPolicies reads a policy file's text as the bridge does (app.LoadFile): unknown keys are errors.
func loadPolicies(text string) (*Policies, error) {
	var p Policies
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return &p, p.Validate()
}

func TestLoadPolicies(t *testing.T) {
	t.Parallel()
	p, err := loadPolicies((`
default:
  deadline: 800ms
commands:
  callbackBeforeSetGroupInfoExCommand:
    deadline: 3s
    failure_policy: refuse
  callbackAfterQuitGroupCommand:
    wait: true
`))
	if err != nil {
		t.Fatal(err)
	}
	set, err := p.resolve()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		cmd      string
		phase    pb.Phase
		deadline time.Duration
		failure  FailurePolicy
		waits    bool
	}{
		{"callbackBeforeSetGroupInfoExCommand", pb.Phase_PHASE_BEFORE, 3 * time.Second, FailRefuse, true},
		{"callbackAfterQuitGroupCommand", pb.Phase_PHASE_AFTER, 800 * time.Millisecond, FailAllow, true},
		{"callbackBeforeCreateGroupCommand", pb.Phase_PHASE_BEFORE, 800 * time.Millisecond, FailAllow, true},
		{"Group.CallbackAfterMemberExit", pb.Phase_PHASE_AFTER, 800 * time.Millisecond, FailAllow, false},
	}
	for _, tt := range tests {
		got := set.forCommand(tt.cmd)
		if got.deadline != tt.deadline || got.failure != tt.failure || got.waits(tt.phase) != tt.waits {
			t.Errorf("%s: deadline %v failure %s waits %v; want %v %s %v", tt.cmd, got.deadline, got.failure, got.waits(tt.phase), tt.deadline, tt.failure, tt.waits)
		}
	}
}

// TestUnknownCommands: a policy for a command no IM server sends (a typo) is reported, so that the
// command does not silently take the default policy.
func TestUnknownCommands(t *testing.T) {
	t.Parallel()
	p, err := loadPolicies((`
commands:
  callbackBeforeSetGroupInfoExCommand: {deadline: 3s}
  Group.CallbackBeforeApplyJoinGroup: {deadline: 1500ms}
  callbackBeforeSetGroupInfoExComand: {failure_policy: refuse}
  Group.CallbackBeforeApplyJoin: {deadline: 1s}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(p.UnknownCommands(), ",")
	if want := "Group.CallbackBeforeApplyJoin,callbackBeforeSetGroupInfoExComand"; got != want {
		t.Errorf("UnknownCommands = %s; want %s", got, want)
	}
	if len(openimCommands) != 52 {
		t.Errorf("%d OpenIM commands; protocol/openim.md lists 52", len(openimCommands))
	}
	for _, cmd := range openimCommands {
		if phase := openimPhase(cmd); strings.HasPrefix(cmd, "callbackAfter") && phase != pb.Phase_PHASE_AFTER {
			t.Errorf("%s: phase %v", cmd, phase)
		}
	}
}
