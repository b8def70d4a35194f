package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
	"github.com/imbridge/imbridge/server"
)

// groupChange is the change OpenIM v3.8.3 is about to apply to a group (SetGroupInfoReq's
// GroupInfoForSet, or the Ex request's fields): nil is "not changed". On the plain route the four
// strings are plain in OpenIM, "" meaning not changed; the model keeps them as nil then.
type groupChange struct {
	GroupID                                             string
	Name, Notification, Introduction, FaceURL, Ex       *string
	NeedVerification, LookMemberInfo, ApplyMemberFriend *int32
}

// openimRequest is the body OpenIM posts for a change on a route: the Ex route sends the change as it
// is (null for what is not changed); the plain route sends every field, "" and 0 for what is not.
func openimRequest(t *testing.T, route string, c groupChange) []byte {
	t.Helper()
	body := map[string]any{"callbackCommand": route, "operationID": "", "groupID": c.GroupID}
	set := func(key string, v any, isNil bool, zero any) {
		switch {
		case !isNil:
			body[key] = v
		case route == beforePlainCmd:
			body[key] = zero
		default:
			body[key] = nil
		}
	}
	set("groupName", deref(c.Name), c.Name == nil, "")
	set("notification", deref(c.Notification), c.Notification == nil, "")
	set("introduction", deref(c.Introduction), c.Introduction == nil, "")
	set("faceURL", deref(c.FaceURL), c.FaceURL == nil, "")
	set("ex", deref(c.Ex), c.Ex == nil, "")
	set("needVerification", deref(c.NeedVerification), c.NeedVerification == nil, 0)
	set("lookMemberInfo", deref(c.LookMemberInfo), c.LookMemberInfo == nil, 0)
	set("applyMemberFriend", deref(c.ApplyMemberFriend), c.ApplyMemberFriend == nil, 0)
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// openimApply is what OpenIM v3.8.3 does with a before-set-group-info answer (protocol/openim.md,
// internal/rpc/group/callback.go): it refuses the change when actionCode is 0 and nextCode 1;
// otherwise it copies the answer's fields over the change. Ex route: groupID, groupName, faceURL,
// introduction, ex and the three settings, whatever they are (null un-sets). Plain route: groupID,
// groupName, faceURL and introduction whatever they are ("" is "not changed"), ex and the settings
// only when not null. Notification: never.
func openimApply(t *testing.T, route string, c groupChange, answer []byte) (groupChange, bool) {
	t.Helper()
	var a struct {
		ActionCode, NextCode                                int
		GroupID                                             string `json:"groupID"`
		GroupName, Introduction, FaceURL, Ex                *string
		NeedVerification, LookMemberInfo, ApplyMemberFriend *int32
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		t.Fatalf("OpenIM cannot parse the answer %s: %v (it would abort the change)", answer, err)
	}
	if a.ActionCode == 0 && a.NextCode == 1 {
		return c, true
	}
	c.GroupID = a.GroupID
	if route == beforeExCmd {
		c.Name, c.Introduction, c.FaceURL, c.Ex = a.GroupName, a.Introduction, a.FaceURL, a.Ex
		c.NeedVerification, c.LookMemberInfo, c.ApplyMemberFriend = a.NeedVerification, a.LookMemberInfo, a.ApplyMemberFriend
		return c, false
	}
	plain := func(s *string) *string {
		if s == nil || *s == "" {
			return nil
		}
		return s
	}
	c.Name, c.Introduction, c.FaceURL = plain(a.GroupName), plain(a.Introduction), plain(a.FaceURL)
	for _, f := range []struct {
		dst **int32
		src *int32
	}{{&c.NeedVerification, a.NeedVerification}, {&c.LookMemberInfo, a.LookMemberInfo}, {&c.ApplyMemberFriend, a.ApplyMemberFriend}} {
		if f.src != nil {
			*f.dst = f.src
		}
	}
	if a.Ex != nil {
		c.Ex = a.Ex
	}
	return c, false
}

const (
	beforeExCmd    = "callbackBeforeSetGroupInfoExCommand"
	beforePlainCmd = "callbackBeforeSetGroupInfoCommand"
)

// TestOpenIMAppliesTheChange: after any answer of the bridge to either before-set-group-info route,
// the change OpenIM applies is exactly the user's, or the decider's replacements, or nothing when
// refused. Before the fix, every plain-route answer carried "ex":"" and zeros, which OpenIM copied
// back: each rename blanked ex and reset the group's three settings.
func TestOpenIMAppliesTheChange(t *testing.T) {
	t.Parallel()
	rename := groupChange{GroupID: "G1", Name: ptr("New name")}
	settings := groupChange{GroupID: "G1", Introduction: ptr("Hi"), Ex: ptr(`{"k":1}`), NeedVerification: ptr(int32(2)), ApplyMemberFriend: ptr(int32(1))}
	replacements := &pb.GroupInfoChanged{Name: ptr("Clean name"), Ex: ptr("replaced"), LookMemberInfo: ptr(int32(1))}
	withReplacements := func(c groupChange) groupChange {
		c.Name, c.Ex, c.LookMemberInfo = ptr("Clean name"), ptr("replaced"), ptr(int32(1))
		return c
	}
	tests := []struct {
		name        string
		decide      func(t *testing.T, dec *bridgetest.Sub) // nil: no decider connected
		logDown     bool                                    // the event log is gone: an error answer
		deadline    bool                                    // the decider does not answer in time
		change      groupChange
		want        func(groupChange) groupChange
		wantRefused bool
	}{
		{name: "no decider", change: rename},
		{name: "no decider, settings", change: settings},
		{name: "allow", change: rename, decide: verdictOf(&pb.Verdict{Decision: pb.Decision_DECISION_ALLOW})},
		{name: "allow, settings", change: settings, decide: verdictOf(&pb.Verdict{Decision: pb.Decision_DECISION_ALLOW})},
		{name: "ack (allow)", change: settings, decide: func(t *testing.T, dec *bridgetest.Sub) { dec.Ack(dec.Next().Id) }},
		{name: "refuse", change: rename, decide: verdictOf(&pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "no"}), wantRefused: true},
		{name: "allow with replacements", change: rename, want: withReplacements,
			decide: verdictOf(&pb.Verdict{Decision: pb.Decision_DECISION_ALLOW, GroupInfo: replacements})},
		{name: "allow with replacements, settings", change: settings, want: withReplacements,
			decide: verdictOf(&pb.Verdict{Decision: pb.Decision_DECISION_ALLOW, GroupInfo: replacements})},
		{name: "error answer", change: settings, logDown: true},
		{name: "deadline passed", change: settings, deadline: true,
			decide: func(t *testing.T, dec *bridgetest.Sub) { dec.Next() }},
	}
	for _, route := range []string{beforeExCmd, beforePlainCmd} {
		for _, tt := range tests {
			t.Run(route+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				deadline := 15 * time.Second
				if tt.deadline {
					deadline = 50 * time.Millisecond
				}
				b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(deadline)}}})
				var dec *bridgetest.Sub
				if tt.decide != nil {
					dec = b.Subscribe(t, &pb.Subscription{Group: "mod", Decide: true, Filter: &pb.EventFilter{Commands: []string{route}}})
				}
				if tt.logDown {
					if err := b.Log.Close(t.Context()); err != nil {
						t.Fatal(err)
					}
				}
				ch := postAsync(t, b, "/openim/"+route, openimRequest(t, route, tt.change))
				if dec != nil {
					tt.decide(t, dec)
				}
				a := waitAnswer(t, ch)
				got, refused := openimApply(t, route, tt.change, []byte(a.body))
				if refused != tt.wantRefused {
					t.Fatalf("answer %s: refused %v; want %v", a.body, refused, tt.wantRefused)
				}
				want := tt.change
				if tt.want != nil {
					want = tt.want(want)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("answer %s: OpenIM applies a change other than the one meant (-want +got):\n%s", a.body, diff)
				}
			})
		}
	}
}

func verdictOf(v *pb.Verdict) func(*testing.T, *bridgetest.Sub) {
	return func(t *testing.T, dec *bridgetest.Sub) { dec.Decide(dec.Next().Id, v) }
}

// TestVerdictsThatCannotTakeEffect are refused to the decider (InvalidArgument, naming what), rather
// than accepted and ignored: OpenIM never copies a notification back, the group id is not a change,
// and only the before-set-group-info callbacks take replacements at all.
func TestVerdictsThatCannotTakeEffect(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, path string
		body       string
		verdict    *pb.Verdict
		wantMsg    string
	}{
		{"notification", "/openim/" + beforeExCmd, `{"groupID":"G1","notification":"x"}`,
			&pb.Verdict{GroupInfo: &pb.GroupInfoChanged{Notification: ptr("y")}}, "group_info.notification"},
		{"notification, plain route", "/openim/" + beforePlainCmd, `{"groupID":"G1","notification":"x"}`,
			&pb.Verdict{Decision: pb.Decision_DECISION_ALLOW, GroupInfo: &pb.GroupInfoChanged{Notification: ptr("y")}}, "group_info.notification"},
		{"group id", "/openim/" + beforeExCmd, `{"groupID":"G1"}`,
			&pb.Verdict{GroupInfo: &pb.GroupInfoChanged{GroupId: "G2"}}, "group_info.group_id"},
		{"replacements on a refusal", "/openim/" + beforeExCmd, `{"groupID":"G1"}`,
			&pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, GroupInfo: &pb.GroupInfoChanged{Name: ptr("y")}}, "group_info"},
		{"replacements on another callback", "/openim/callbackBeforeCreateGroupCommand", `{"groupID":"G1"}`,
			&pb.Verdict{GroupInfo: &pb.GroupInfoChanged{Name: ptr("y")}}, "only OpenIM's before-set-group-info"},
		{"unknown decision", "/openim/" + beforeExCmd, `{"groupID":"G1"}`, &pb.Verdict{Decision: 7}, "decision 7"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(50 * time.Millisecond)}}})
			dec := b.Subscribe(t, &pb.Subscription{Group: "mod", Decide: true})
			ch := postAsync(t, b, tt.path, []byte(tt.body))
			ev := dec.Next()
			dec.Decide(ev.Id, tt.verdict)
			err := dec.End()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), ev.Id) {
				t.Errorf("decider's stream ended with %v; want InvalidArgument naming %q and the event", err, tt.wantMsg)
			}
			if a := waitAnswer(t, ch); a.status != http.StatusOK || !strings.HasPrefix(a.body, `{"actionCode":0,"errCode":0,`) {
				t.Errorf("callback answered %d %s; want the failure policy (allow)", a.status, a.body)
			}
		})
	}
}
