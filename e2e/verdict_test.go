package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imbridge/imbridge/examples"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
	"github.com/imbridge/imbridge/server"
)

type answer struct {
	status int
	body   string
	err    error
}

// postAsync posts in the background: a before-callback's answer waits for the verdict.
func postAsync(t *testing.T, b *bridgetest.Bridge, path string, body []byte) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		status, out, err := b.Do(http.MethodPost, path, nil, body)
		ch <- answer{status, string(out), err}
	}()
	return ch
}

func waitAnswer(t *testing.T, ch <-chan answer) answer {
	t.Helper()
	timer := time.NewTimer(bridgetest.Timeout)
	defer timer.Stop()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatalf("post: %v", a.err)
		}
		return a
	case <-timer.C:
		t.Fatal("no answer")
		return answer{}
	}
}

const beforeEx = "/openim/callbackBeforeSetGroupInfoExCommand"

// The request's group fields, echoed in every answer to the before-set-group-info-ex callback.
const beforeExEcho = `"groupID":"G002","groupName":"Proposed name","notification":null,"introduction":null,"faceURL":null,"ex":null,"needVerification":1,"lookMemberInfo":null,"applyMemberFriend":null}`

func TestBeforeCallbackVerdicts(t *testing.T) {
	t.Parallel()
	body := examples.Must("openim-before-set-group-info-ex").Body
	tests := []struct {
		name    string
		verdict *pb.Verdict
		want    string
	}{
		{
			name:    "allowed echoes the request",
			verdict: &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW},
			want:    `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0,` + beforeExEcho,
		},
		{
			name:    "refused passes code, message and detail",
			verdict: &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, ErrorCode: 4001, Message: "name not allowed", Detail: "word list"},
			want:    `{"actionCode":0,"errCode":4001,"errMsg":"name not allowed","errDlt":"word list","nextCode":1,` + beforeExEcho,
		},
		{
			name: "allowed with replacements",
			verdict: &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW, GroupInfo: &pb.GroupInfoChanged{
				Name: ptr("Cleaned name"), Ex: ptr(""),
			}},
			want: `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0,"groupID":"G002","groupName":"Cleaned name","notification":null,"introduction":null,"faceURL":null,"ex":"","needVerification":1,"lookMemberInfo":null,"applyMemberFriend":null}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A long deadline: the verdict, not the clock, must end the wait.
			b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(15 * time.Second)}}})
			decider := b.Subscribe(t, &pb.Subscription{Group: "moderation", Decide: true})
			ch := postAsync(t, b, beforeEx, body)
			ev := decider.Next()
			if ev.Phase != pb.Phase_PHASE_BEFORE || ev.DecideBy == nil || ev.GetGroupInfoChanged().GetName() != "Proposed name" {
				t.Fatalf("event %v; want a before event with decide_by and the proposed name", ev)
			}
			decider.Decide(ev.Id, tt.verdict)
			if a := waitAnswer(t, ch); a.status != http.StatusOK || a.body != tt.want {
				t.Errorf("answer %d %s\nwant 200 %s", a.status, a.body, tt.want)
			}
		})
	}
}

func TestBeforeCallbackSeveralDeciders(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(15 * time.Second)}}})
	first := b.Subscribe(t, &pb.Subscription{Group: "first", Decide: true})
	second := b.Subscribe(t, &pb.Subscription{Group: "second", Decide: true})
	watcher := b.Subscribe(t, &pb.Subscription{Group: "audit"}) // not a decider: never waited for
	ch := postAsync(t, b, beforeEx, examples.Must("openim-before-set-group-info-ex").Body)
	ev := first.Next()
	first.Decide(ev.Id, &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW})
	watcher.Ack(watcher.Next().Id)
	second.Decide(second.Next().Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "no"})
	if a := waitAnswer(t, ch); !strings.Contains(a.body, `"errMsg":"no","errDlt":"","nextCode":1`) {
		t.Errorf("answer %s; want the refusal: any refusal refuses", a.body)
	}
}

func TestBeforeCallbackDeadline(t *testing.T) {
	t.Parallel()
	body := examples.Must("openim-before-set-group-info-ex").Body
	for _, tt := range []struct {
		failure server.FailurePolicy
		want    string
	}{
		{server.FailAllow, `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0,` + beforeExEcho},
		{server.FailRefuse, `{"actionCode":0,"errCode":1,"errMsg":"imbridge: no verdict before the deadline","errDlt":"","nextCode":1,` + beforeExEcho},
	} {
		t.Run(string(tt.failure), func(t *testing.T) {
			t.Parallel()
			f := tt.failure
			b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Commands: map[string]server.CommandPolicy{
				"callbackBeforeSetGroupInfoExCommand": {Deadline: dur(50 * time.Millisecond), FailurePolicy: &f},
			}}})
			silent := b.Subscribe(t, &pb.Subscription{Group: "slow", Decide: true})
			ch := postAsync(t, b, beforeEx, body)
			ev := silent.Next() // delivered, never answered
			if a := waitAnswer(t, ch); a.status != http.StatusOK || a.body != tt.want {
				t.Errorf("answer %d %s\nwant 200 %s", a.status, a.body, tt.want)
			}
			silent.Decide(ev.Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE}) // too late: ignored
		})
	}
}

// TestBeforeCallbackNoDecider: nobody to ask, so the answer comes at once (failure policy, default
// allow), and the event is stored like any other.
func TestBeforeCallbackNoDecider(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(15 * time.Second)}}})
	start := time.Now()
	status, out := b.Post(t, http.MethodPost, beforeEx, nil, examples.Must("openim-before-set-group-info-ex").Body)
	if want := `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0,` + beforeExEcho; status != http.StatusOK || string(out) != want {
		t.Errorf("answer %d %s; want %s", status, out, want)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("answer took %v: it waited for the 15s deadline", elapsed)
	}
	sub := b.Subscribe(t, &pb.Subscription{Group: "late"})
	if ev := sub.Next(); ev.Command != "callbackBeforeSetGroupInfoExCommand" || ev.DecideBy != nil {
		t.Errorf("stored event %v; want the before event without decide_by", ev)
	}
}

// TestBeforeSetGroupInfoEchoes: the non-Ex before callback's allow answer carries the group fields,
// and null for ex and the settings, which OpenIM would otherwise copy back over the change.
func TestBeforeSetGroupInfoEchoes(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	status, out := b.Post(t, http.MethodPost, "/openim/callbackBeforeSetGroupInfoCommand", nil, examples.Must("openim-before-set-group-info").Body)
	want := `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0,"groupID":"G003","groupName":"Proposed name","notification":"","introduction":"Hello","faceURL":"","ex":null,"needVerification":null,"lookMemberInfo":null,"applyMemberFriend":null}`
	if status != http.StatusOK || string(out) != want {
		t.Errorf("answer %d %s\nwant %s", status, out, want)
	}
}

// TestTencentBeforeCallbackRefused: an untyped Tencent before-callback is decided too.
func TestTencentBeforeCallbackRefused(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(15 * time.Second)}}})
	decider := b.Subscribe(t, &pb.Subscription{Group: "joins", Decide: true, Filter: &pb.EventFilter{Sources: []pb.Source{pb.Source_SOURCE_TENCENT}}})
	body := []byte(`{"CallbackCommand":"Group.CallbackBeforeApplyJoinGroup","GroupId":"@TGS#1","Type":"Public","Requestor_Account":"eve","EventTime":1670574414123}`)
	ch := postAsync(t, b, "/tencent"+fmt.Sprintf(tencentQS, "Group.CallbackBeforeApplyJoinGroup"), body)
	ev := decider.Next()
	if ev.Phase != pb.Phase_PHASE_BEFORE || ev.Kind != pb.EventKind_EVENT_KIND_RAW {
		t.Fatalf("event %v; want a raw before event", ev)
	}
	decider.Decide(ev.Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, ErrorCode: 10150, Message: "banned"})
	if a := waitAnswer(t, ch); a.body != `{"ActionStatus":"OK","ErrorInfo":"banned","ErrorCode":10150}` {
		t.Errorf("answer %s; want the custom refusal code", a.body)
	}
}

func dur(d time.Duration) *server.Duration { v := server.Duration(d); return &v }

// TestDeciderThatAcks: a decider that acks instead of answering allows.
func TestDeciderThatAcks(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(15 * time.Second)}}})
	decider := b.Subscribe(t, &pb.Subscription{Group: "lazy", Decide: true})
	start := time.Now()
	ch := postAsync(t, b, beforeEx, examples.Must("openim-before-set-group-info-ex").Body)
	decider.Ack(decider.Next().Id)
	if a := waitAnswer(t, ch); !strings.HasPrefix(a.body, `{"actionCode":0,"errCode":0,`) || time.Since(start) > 10*time.Second {
		t.Errorf("answer %s after %v; want an allow before the 15s deadline", a.body, time.Since(start))
	}
}

// TestHalfClosedDecider: a decider that closed its side cannot answer; callbacks do not wait for it.
func TestHalfClosedDecider(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(15 * time.Second)}}})
	decider := b.Subscribe(t, &pb.Subscription{Group: "gone", Decide: true})
	if err := decider.Stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	status, out := b.Post(t, http.MethodPost, beforeEx, nil, examples.Must("openim-before-set-group-info-ex").Body)
	if status != http.StatusOK || !strings.HasPrefix(string(out), `{"actionCode":0,"errCode":0,`) || time.Since(start) > 10*time.Second {
		t.Errorf("answer %d %s after %v; want an allow before the 15s deadline", status, out, time.Since(start))
	}
}

// TestBeforeSetGroupInfoErrors: OpenIM copies the answer's group fields over the change even when
// the answer is an error, so errors on these routes echo the request, or refuse when they cannot.
func TestBeforeSetGroupInfoErrors(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	status, out := b.Post(t, http.MethodPost, beforeEx, nil, []byte(`{"groupID":"G002","groupName":"x","needVerification":"often"}`))
	if !strings.HasPrefix(string(out), `{"actionCode":0,"errCode":400,"errMsg":"wirejson: needVerification`) || !strings.Contains(string(out), `"nextCode":1,"groupID":""`) || status != http.StatusBadRequest {
		t.Errorf("undecodable body: %d %s; want a refusal carrying the error", status, out)
	}
	b.CutNATS() // the event log is gone: 503
	status, out = b.Post(t, http.MethodPost, beforeEx, nil, examples.Must("openim-before-set-group-info-ex").Body)
	if !strings.HasPrefix(string(out), `{"actionCode":1,"errCode":503,`) || !strings.HasSuffix(string(out), `"nextCode":0,`+beforeExEcho) || status != http.StatusServiceUnavailable {
		t.Errorf("log down: %d %s; want actionCode 1 echoing the request", status, out)
	}
	status, out = b.Post(t, http.MethodPost, "/openim/callbackAfterQuitGroupCommand", nil, examples.Must("openim-after-quit-group").Body)
	assertOpenIMError(t, status, out, http.StatusServiceUnavailable)
}

// TestDeciderOnAnswerConnection: a decider's events come over the answer path's own NATS
// connection, not queued behind every other group's deliveries on the shared one. With the shared
// connection gone, a before-callback is still decided.
func TestDeciderOnAnswerConnection(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{Policies: &server.Policies{Default: server.CommandPolicy{Deadline: dur(15 * time.Second)}}})
	decider := b.Subscribe(t, &pb.Subscription{Group: "moderation", Decide: true})
	b.Log.Conn().Close()
	for range 2 { // the second pull request is sent after the first record: on the answer connection too
		ch := postAsync(t, b, beforeEx, examples.Must("openim-before-set-group-info-ex").Body)
		decider.Decide(decider.Next().Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "no"})
		if a := waitAnswer(t, ch); !strings.Contains(a.body, `"errMsg":"no"`) {
			t.Fatalf("answer %s; want the decider's refusal", a.body)
		}
	}
}
