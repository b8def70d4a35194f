package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// TestAuthAdmin: every AdminService method with no token, an unknown one, a token without the admin
// scope and the admin token.
func TestAuthAdmin(t *testing.T) {
	t.Parallel()
	b := guardedBridge(t)
	if code, msg := subscribeCode(t, b, tokenAudit, &pb.Subscription{Group: "audit", Filter: &pb.EventFilter{Sources: []pb.Source{pb.Source_SOURCE_OPENIM}}}); code != codes.OK {
		t.Fatalf("subscribe: %v %s", code, msg)
	}
	if code, msg := subscribeCode(t, b, tokenFull, &pb.Subscription{Group: "payments"}); code != codes.OK {
		t.Fatalf("subscribe: %v %s", code, msg)
	}
	admin := pb.NewAdminServiceClient(b.Conn)
	// An admin of some groups only manages those, and sees only those.
	auditOnly := withToken(t.Context(), tokenAdminAudit)
	if _, err := admin.GetGroup(auditOnly, &pb.GetGroupRequest{Name: "payments"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("GetGroup of another group with a narrower admin token: %v; want PermissionDenied", err)
	}
	if _, err := admin.DeleteGroup(auditOnly, &pb.DeleteGroupRequest{Name: "payments", Force: true}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("DeleteGroup of another group with a narrower admin token: %v; want PermissionDenied", err)
	}
	if list, err := admin.ListGroups(auditOnly, &pb.ListGroupsRequest{}); err != nil || len(list.Groups) != 1 || list.Groups[0].Name != "audit" {
		t.Errorf("ListGroups with a narrower admin token: %v %v; want audit alone", list, err)
	}
	if _, err := admin.ListDeadLetters(auditOnly, &pb.ListDeadLettersRequest{Group: "payments"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ListDeadLetters of another group with a narrower admin token: %v; want PermissionDenied", err)
	}
	if _, err := admin.RedriveDeadLetters(auditOnly, &pb.RedriveDeadLettersRequest{Group: "payments"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("RedriveDeadLetters of another group with a narrower admin token: %v; want PermissionDenied", err)
	}
	if _, err := admin.PurgeDeadLetters(auditOnly, &pb.PurgeDeadLettersRequest{Group: "payments"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("PurgeDeadLetters of another group with a narrower admin token: %v; want PermissionDenied", err)
	}
	calls := map[string]func(context.Context) error{
		"ListDeadLetters": func(ctx context.Context) error {
			_, err := admin.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{})
			return err
		},
		"GetDeadLetter": func(ctx context.Context) error {
			_, err := admin.GetDeadLetter(ctx, &pb.GetDeadLetterRequest{Sequence: 1})
			if status.Code(err) == codes.NotFound {
				return nil // past the guard: there is none
			}
			return err
		},
		"RedriveDeadLetters": func(ctx context.Context) error {
			_, err := admin.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{Group: "audit"})
			return err
		},
		"PurgeDeadLetters": func(ctx context.Context) error {
			_, err := admin.PurgeDeadLetters(ctx, &pb.PurgeDeadLettersRequest{Group: "audit"})
			return err
		},
		"ListGroups": func(ctx context.Context) error { _, err := admin.ListGroups(ctx, &pb.ListGroupsRequest{}); return err },
		"GetGroup": func(ctx context.Context) error {
			_, err := admin.GetGroup(ctx, &pb.GetGroupRequest{Name: "audit"})
			return err
		},
		"ResetGroup": func(ctx context.Context) error {
			_, err := admin.ResetGroup(ctx, &pb.ResetGroupRequest{Name: "audit", To: &pb.ResetGroupRequest_New{New: true}})
			return err
		},
		"DeleteGroup": func(ctx context.Context) error {
			_, err := admin.DeleteGroup(ctx, &pb.DeleteGroupRequest{Name: "audit", Force: true})
			return err
		},
	}
	for _, method := range []string{"ListGroups", "GetGroup", "ResetGroup", "ListDeadLetters", "GetDeadLetter", "RedriveDeadLetters", "PurgeDeadLetters", "DeleteGroup"} { // delete last
		for _, tt := range []struct {
			who  string
			ctx  context.Context
			want codes.Code
		}{
			{"no token", t.Context(), codes.Unauthenticated},
			{"unknown token", withToken(t.Context(), "imb_guess"), codes.Unauthenticated},
			{"no admin scope", withToken(t.Context(), tokenFull), codes.PermissionDenied},
			{"admin", withToken(t.Context(), tokenAdmin), codes.OK},
		} {
			if err := calls[method](tt.ctx); status.Code(err) != tt.want {
				t.Errorf("%s, %s: %v; want %v", method, tt.who, err, tt.want)
			}
		}
	}
}

// TestAdminGroups: list groups with their settings and backlog, move one back, to a time and to
// the end, and delete one (not under a connected member, unless forced).
func TestAdminGroups(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	admin := pb.NewAdminServiceClient(b.Conn)
	ctx := t.Context()

	member := b.Subscribe(t, &pb.Subscription{Group: "audit", Filter: &pb.EventFilter{Commands: []string{"callbackAfterQuitGroupCommand"}}})
	b.Subscribe(t, &pb.Subscription{Group: "mods", Decide: true}).Cancel()
	waitGroupIdle(t, b, "mods") // else its pull, not yet withdrawn, may take the quit
	postQuit(t, b, "G1")
	first := member.Next()
	member.Ack(first.Id)
	bridgetest.WaitFor(t, "the ack to reach the log", func() bool {
		g, err := admin.GetGroup(ctx, &pb.GetGroupRequest{Name: "audit"})
		return err == nil && g.AckFloorSequence == first.Sequence
	})

	list, err := admin.ListGroups(ctx, &pb.ListGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Groups) != 2 || list.Groups[0].Name != "audit" || list.Groups[1].Name != "mods" {
		t.Fatalf("groups %v; want audit and mods", list.Groups)
	}
	audit, mods := list.Groups[0], list.Groups[1]
	if audit.MembersHere != 1 || audit.Decide || audit.Filter.GetCommands()[0] != "callbackAfterQuitGroupCommand" || audit.AckWait.AsDuration() != 30*time.Second {
		t.Errorf("audit %v", audit)
	}
	if !mods.Decide || mods.PendingRecords != 1 || mods.MembersHere != 0 {
		t.Errorf("mods %v; want a decider group without members, the quit pending", mods)
	}
	if _, err := admin.GetGroup(ctx, &pb.GetGroupRequest{Name: "nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown group: %v; want NotFound", err)
	}
	if _, err := admin.GetGroup(ctx, &pb.GetGroupRequest{Name: "bad name"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad group name: %v; want InvalidArgument", err)
	}

	// Not while a member is connected: what it holds would be written down as of before the move.
	if _, err := admin.ResetGroup(ctx, &pb.ResetGroupRequest{Name: "audit", To: &pb.ResetGroupRequest_Sequence{Sequence: first.Sequence}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("reset under a connected member: %v; want FailedPrecondition", err)
	}
	sub := &pb.Subscription{Group: "audit", Filter: &pb.EventFilter{Commands: []string{"callbackAfterQuitGroupCommand"}}}
	stop := func(m *bridgetest.Sub) {
		t.Helper()
		m.Cancel()
		_ = m.End()
		waitGroupIdle(t, b, "audit")
	}

	// Back to the first event: delivered again.
	stop(member)
	g, err := admin.ResetGroup(ctx, &pb.ResetGroupRequest{Name: "audit", To: &pb.ResetGroupRequest_Sequence{Sequence: first.Sequence}})
	if err != nil {
		t.Fatal(err)
	}
	member = b.Subscribe(t, sub)
	if again := member.Next(); again.Id != first.Id {
		t.Errorf("after a reset to sequence %d, got %s; want %s again (group %v)", first.Sequence, again.Id, first.Id, g)
	}
	member.Ack(first.Id)

	// To a time: the events stored from then on (the first was stored before its answer came).
	mark := time.Now()
	postQuit(t, b, "G2")
	second := member.Next()
	member.Ack(second.Id)
	bridgetest.WaitFor(t, "the ack to reach the log", func() bool {
		g, err := admin.GetGroup(ctx, &pb.GetGroupRequest{Name: "audit"})
		return err == nil && g.AckFloorSequence == second.Sequence
	})
	stop(member)
	if _, err := admin.ResetGroup(ctx, &pb.ResetGroupRequest{Name: "audit", To: &pb.ResetGroupRequest_Time{Time: timestamppb.New(mark)}}); err != nil {
		t.Fatal(err)
	}
	member = b.Subscribe(t, sub)
	if again := member.Next(); again.Id != second.Id {
		t.Errorf("after a reset to %v, got %v; want the event stored after it", mark, again)
	}
	member.Ack(second.Id)

	// To the end: nothing stored before comes again.
	stop(member)
	postQuit(t, b, "G3")
	g, err = admin.ResetGroup(ctx, &pb.ResetGroupRequest{Name: "audit", To: &pb.ResetGroupRequest_New{New: true}})
	if err != nil || g.PendingRecords != 0 {
		t.Errorf("reset to new: %v %v; want no pending records", g, err)
	}

	// Delete: refused under a connected member, unless forced; the group is then gone.
	b.Subscribe(t, &pb.Subscription{Group: "audit", Filter: &pb.EventFilter{Commands: []string{"callbackAfterQuitGroupCommand"}}})
	if _, err := admin.DeleteGroup(ctx, &pb.DeleteGroupRequest{Name: "audit"}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "force") {
		t.Errorf("delete under a member: %v; want FailedPrecondition naming force", err)
	}
	if _, err := admin.DeleteGroup(ctx, &pb.DeleteGroupRequest{Name: "mods"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.GetGroup(ctx, &pb.GetGroupRequest{Name: "mods"}); status.Code(err) != codes.NotFound {
		t.Errorf("deleted group: %v; want NotFound", err)
	}
	if _, err := admin.DeleteGroup(ctx, &pb.DeleteGroupRequest{Name: "audit", Force: true}); err != nil {
		t.Errorf("forced delete: %v", err)
	}
	if code, _ := b.Post(t, http.MethodGet, "/healthz", nil, nil); code != http.StatusOK {
		t.Errorf("healthz after deletes: %d", code)
	}
}
