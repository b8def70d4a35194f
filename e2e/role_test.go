package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
	"github.com/imbridge/imbridge/server"
)

// TestTiers: an ingest instance and a deliver instance on one NATS server do the bridge's work
// between them: a callback posted to the first reaches a group member on the second, a decider on
// the second decides a before-callback posted to the first, and each refuses the other's job in
// words that name the role.
func TestTiers(t *testing.T) {
	t.Parallel()
	url := bridgetest.ExternalNATS(t)
	ingest := bridgetest.Start(t, bridgetest.Options{NATSURL: url, Role: server.RoleIngest})
	deliver := bridgetest.Start(t, bridgetest.Options{NATSURL: url, Role: server.RoleDeliver})

	member := deliver.Subscribe(t, &pb.Subscription{Group: "audit", Filter: &pb.EventFilter{Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_MEMBER_QUIT}}})
	tail := deliver.Subscribe(t, &pb.Subscription{Filter: &pb.EventFilter{GroupIds: []string{"G1"}}})
	postQuit(t, ingest, "G1")
	if ev := member.Next(); ev.GetMemberQuit().GetGroupId() != "G1" {
		t.Errorf("member on the deliver instance got %v; want the quit posted to the ingest instance", ev)
	} else {
		member.Ack(ev.Id)
	}
	if ev := tail.Next(); ev.GetMemberQuit().GetGroupId() != "G1" {
		t.Errorf("tail on the deliver instance got %v; want the quit posted to the ingest instance", ev)
	}

	dec := deliver.Subscribe(t, &pb.Subscription{Group: "mod", Decide: true, Filter: &pb.EventFilter{Commands: []string{"callbackBeforeSetGroupInfoExCommand"}}})
	admin := pb.NewAdminServiceClient(ingest.Conn)
	bridgetest.WaitFor(t, "the ingest instance knows the decider", func() bool {
		g, err := admin.GetGroup(t.Context(), &pb.GetGroupRequest{Name: "mod"})
		return err == nil && g.MembersElsewhere == 1
	})
	ch := postAsync(t, ingest, beforeEx, []byte(`{"groupID":"G1","groupName":"bad name"}`))
	ev := dec.Next()
	dec.Decide(ev.Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "no"})
	if ans := waitAnswer(t, ch); ans.status != http.StatusOK || !strings.Contains(ans.body, `"nextCode":1`) {
		t.Errorf("before-callback on the ingest instance: %d %s; want the refusal of the decider on the deliver instance", ans.status, ans.body)
	}

	for _, sub := range []*pb.Subscription{{Group: "audit"}, {Filter: &pb.EventFilter{GroupIds: []string{"G1"}}}} {
		err := subscribeErr(t, ingest, sub)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--role ingest") {
			t.Errorf("subscribing %v at the ingest instance: %v; want FailedPrecondition naming its role", sub, err)
		}
	}
	for _, path := range []string{"/openim/callbackAfterQuitGroupCommand", beforeEx} {
		code, out := deliver.Post(t, http.MethodPost, path, nil, []byte(`{"groupID":"G1","userID":"u"}`))
		if code != http.StatusServiceUnavailable || !strings.HasPrefix(string(out), `{"actionCode":1,"errCode":503,`) || !strings.Contains(string(out), "--role deliver") {
			t.Errorf("POST %s to the deliver instance: %d %s; want OpenIM's 503 naming the role", path, code, out)
		}
	}
	qs := fmt.Sprintf(tencentQS, "Group.CallbackAfterMemberExit")
	code, out := deliver.Post(t, http.MethodPost, "/tencent"+qs, nil, []byte(`{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"G1"}`))
	if code != http.StatusServiceUnavailable || !strings.Contains(string(out), `"ActionStatus":"FAIL"`) || !strings.Contains(string(out), "--role deliver") {
		t.Errorf("Tencent callback to the deliver instance: %d %s; want Tencent's FAIL naming the role", code, out)
	}
	if _, err := deliver.OpenIM.Callback(t.Context(), &pb.OpenIMCallbackRequest{Command: "callbackAfterQuitGroupCommand"}); status.Code(err) != codes.Unavailable {
		t.Errorf("callback RPC to the deliver instance: %v; want Unavailable", err)
	}
}

// TestIngestTakesDeciders: a decider may connect to an ingest instance, its traffic then running
// with the callbacks' rather than behind the deliveries; it decides callbacks posted to that instance
// and to another.
func TestIngestTakesDeciders(t *testing.T) {
	t.Parallel()
	url := bridgetest.ExternalNATS(t)
	ingest := bridgetest.Start(t, bridgetest.Options{NATSURL: url, Role: server.RoleIngest})
	other := bridgetest.Start(t, bridgetest.Options{NATSURL: url, Role: server.RoleIngest})
	dec := ingest.Subscribe(t, &pb.Subscription{Group: "mod", Decide: true, Filter: &pb.EventFilter{Commands: []string{"callbackBeforeSetGroupInfoExCommand"}}})
	admin := pb.NewAdminServiceClient(other.Conn)
	bridgetest.WaitFor(t, "the other instance knows the decider", func() bool {
		g, err := admin.GetGroup(t.Context(), &pb.GetGroupRequest{Name: "mod"})
		return err == nil && g.MembersElsewhere == 1
	})
	// A group that delivers is not turned into a decider (and its deliveries into the ingest tier's).
	deliver := bridgetest.Start(t, bridgetest.Options{NATSURL: url, Role: server.RoleDeliver})
	plain := deliver.Subscribe(t, &pb.Subscription{Group: "audit"})
	plain.Cancel()
	ingestAdmin := pb.NewAdminServiceClient(ingest.Conn)
	bridgetest.WaitFor(t, "the ingest instance knows the group idle", func() bool {
		g, err := ingestAdmin.GetGroup(t.Context(), &pb.GetGroupRequest{Name: "audit"})
		return err == nil && g.MembersElsewhere == 0 && g.MembersHere == 0
	})
	err := subscribeErr(t, ingest, &pb.Subscription{Group: "audit", Decide: true})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "does not decide") {
		t.Errorf("decider joining a delivering group at the ingest instance: %v; want FailedPrecondition", err)
	}
	for _, at := range []*bridgetest.Bridge{ingest, other} {
		ch := postAsync(t, at, beforeEx, []byte(`{"groupID":"G1","groupName":"bad name"}`))
		dec.Decide(dec.Next().Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "no"})
		if ans := waitAnswer(t, ch); ans.status != http.StatusOK || !strings.Contains(ans.body, `"nextCode":1`) {
			t.Errorf("before-callback: %d %s; want the refusal of the decider on the ingest instance", ans.status, ans.body)
		}
	}
}

func TestRoleParse(t *testing.T) {
	for in, want := range map[string]server.Role{"": server.RoleAll, "all": server.RoleAll, "ingest": server.RoleIngest, "deliver": server.RoleDeliver} {
		if got, err := server.ParseRole(in); err != nil || got != want {
			t.Errorf("ParseRole(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := server.ParseRole("both"); err == nil {
		t.Error("ParseRole(both): no error")
	}
}
