package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/imbridge/imbridge/examples"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
	"github.com/imbridge/imbridge/server"
)

// metricWith reads the value of the series of name with exactly these labels (a counter, a gauge,
// or a histogram's count); 0 when there is none.
func metricWith(t *testing.T, b *bridgetest.Bridge, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := b.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// accessLine returns the access line of the callback whose line contains all of want.
func accessLine(t *testing.T, logs *syncBuffer, want ...string) string {
	t.Helper()
lines:
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, "msg=callback ") {
			continue
		}
		for _, w := range want {
			if !strings.Contains(line, w) {
				continue lines
			}
		}
		return line
	}
	t.Errorf("no access line with %q in:\n%s", want, logs.String())
	return ""
}

// TestCallbackObserved: every answered callback, over HTTP or gRPC, is counted by vendor, command,
// phase and answer, timed, and logged in one access line saying why when it was not a plain OK.
func TestCallbackObserved(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	b := bridgetest.Start(t, bridgetest.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Policies: &server.Policies{Commands: map[string]server.CommandPolicy{
			"callbackBeforeSetGroupInfoExCommand": {Deadline: dur(15 * time.Second)},
			"callbackBeforeSetGroupInfoCommand":   {Deadline: dur(50 * time.Millisecond), FailurePolicy: ptr(server.FailRefuse)},
		}},
	})
	count := func(vendor, command, phase, answer string) float64 {
		return metricWith(t, b, "imbridge_callbacks_total", map[string]string{"vendor": vendor, "command": command, "phase": phase, "answer": answer})
	}

	// Stored: ok, with OpenIM's operationID.
	quit := examples.Must("openim-after-quit-group")
	if status, out := b.Post(t, http.MethodPost, "/openim/"+quit.Command, http.Header{"OperationID": {"op-42"}}, quit.Body); status != http.StatusOK {
		t.Fatalf("quit: %d %s", status, out)
	}
	if got := count("openim", quit.Command, "after", server.AnswerOK); got != 1 {
		t.Errorf("ok after-callbacks counted %v; want 1", got)
	}
	accessLine(t, &logs, "command="+quit.Command, "answer=ok", "status=200", "operation_id=op-42", "transport=http", "event=")

	// No decider: the failure policy (allow), and why.
	ex := examples.Must("openim-before-set-group-info-ex")
	if status, out := b.Post(t, http.MethodPost, beforeEx, nil, ex.Body); status != http.StatusOK {
		t.Fatalf("before, no decider: %d %s", status, out)
	}
	accessLine(t, &logs, "command=callbackBeforeSetGroupInfoExCommand", "answer=failure_policy", `why="no decider connected: failure policy allow"`)

	// A decider refuses: refused, naming the group.
	decider := b.Subscribe(t, &pb.Subscription{Group: "mods", Decide: true})
	ch := postAsync(t, b, beforeEx, ex.Body)
	ev := decider.Next()
	decider.Decide(ev.Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "no swearing"})
	waitAnswer(t, ch)
	if got := count("openim", "callbackBeforeSetGroupInfoExCommand", "before", server.AnswerRefused); got != 1 {
		t.Errorf("refusals counted %v; want 1", got)
	}
	accessLine(t, &logs, "answer=refused", `why="refused by group mods: no swearing"`)
	if got := metricWith(t, b, "imbridge_verdicts_total", map[string]string{"group": "mods", "decision": "refuse"}); got != 1 {
		t.Errorf("refusing verdicts of mods counted %v; want 1", got)
	}

	// The decider does not answer within the 50 ms deadline: the failure policy (refuse), the
	// group named as the one that missed it.
	plain := examples.Must("openim-before-set-group-info")
	ch = postAsync(t, b, "/openim/"+plain.Command, plain.Body)
	missed := decider.Next()
	waitAnswer(t, ch)
	decider.Ack(missed.Id)
	accessLine(t, &logs, "command="+plain.Command, "answer=failure_policy", "no verdict from mods within the 50ms deadline: failure policy refuse")
	if got := metricWith(t, b, "imbridge_verdict_deadline_misses_total", map[string]string{"group": "mods"}); got != 1 {
		t.Errorf("deadline misses of mods counted %v; want 1", got)
	}

	// Bad input and a command no IM server sends: counted under "other".
	if status, _ := b.Post(t, http.MethodPost, "/openim/callbackNobodySendsThis", nil, []byte(`{`)); status != http.StatusBadRequest {
		t.Errorf("bad JSON: %d; want 400", status)
	}
	if got := count("openim", "other", "after", server.AnswerBadRequest); got != 1 {
		t.Errorf("bad requests of an unknown command counted %v; want 1 under command=other", got)
	}
	accessLine(t, &logs, "command=callbackNobodySendsThis", "answer=bad_request", "status=400", "why=")

	// Tencent over gRPC.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "operationid", "grpc-op")
	tencent := pb.NewTencentCallbackServiceClient(b.Conn)
	if _, err := tencent.AfterMemberExit(ctx, &pb.TencentMemberExitRequest{CallbackCommand: "Group.CallbackAfterMemberExit", GroupId: "@TGS#1"}); err != nil {
		t.Fatal(err)
	}
	if got := count("tencent", "Group.CallbackAfterMemberExit", "after", server.AnswerOK); got != 1 {
		t.Errorf("tencent callbacks over gRPC counted %v; want 1", got)
	}
	accessLine(t, &logs, "vendor=tencent", "transport=grpc", "answer=ok", "operation_id=grpc-op")

	if got := metricWith(t, b, "imbridge_callback_duration_seconds", map[string]string{"vendor": "openim", "phase": "before", "answer": server.AnswerRefused}); got != 1 {
		t.Errorf("refused callbacks timed %v; want 1", got)
	}
	if got := metricWith(t, b, "imbridge_log_publish_seconds", nil); got < 4 {
		t.Errorf("publishes timed %v; want one per stored callback", got)
	}
}

// TestSubscriberMetrics: subscribers by group, deliveries and acks by group, and each group's
// backlog as the log counts it, whether or not a member is connected.
func TestSubscriberMetrics(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	member := b.Subscribe(t, &pb.Subscription{Group: "audit"})
	b.Subscribe(t, &pb.Subscription{}) // a live tail
	if got := metricWith(t, b, "imbridge_subscribers", map[string]string{"group": "audit"}); got != 1 {
		t.Errorf("audit subscribers %v; want 1", got)
	}
	if got := metricWith(t, b, "imbridge_subscribers", map[string]string{"group": ""}); got != 1 {
		t.Errorf("live tails %v; want 1", got)
	}
	postQuit(t, b, "G1")
	ev := member.Next()
	member.Ack(ev.Id)
	bridgetest.WaitFor(t, "the ack counted", func() bool {
		return metricWith(t, b, "imbridge_acks_total", map[string]string{"group": "audit"}) == 1
	})
	if got := metricWith(t, b, "imbridge_deliveries_total", map[string]string{"group": "audit"}); got != 1 {
		t.Errorf("deliveries to audit %v; want 1", got)
	}
	member.Cancel()
	_ = member.End()
	waitGroupIdle(t, b, "audit")
	postQuit(t, b, "G2")
	postQuit(t, b, "G3")
	// The log's answers are kept a moment (logCacheTTL): wait for the scrape that sees both posts.
	bridgetest.WaitFor(t, "audit's backlog of 2 records (posted while no member was connected)", func() bool {
		return metricWith(t, b, "imbridge_group_pending_records", map[string]string{"group": "audit"}) == 2
	})
	if got := metricWith(t, b, "imbridge_log_records", nil); got != 3 {
		t.Errorf("log records %v; want 3", got)
	}
	if got := metricWith(t, b, "imbridge_log_up", nil); got != 1 {
		t.Errorf("imbridge_log_up %v; want 1", got)
	}
	if got := metricWith(t, b, "imbridge_log_max_age_seconds", nil); got != (7 * 24 * time.Hour).Seconds() {
		t.Errorf("imbridge_log_max_age_seconds %v; want 7 days", got)
	}
	if got := metricWith(t, b, "imbridge_log_oldest_record_age_seconds", nil); got <= 0 {
		t.Errorf("imbridge_log_oldest_record_age_seconds %v; want > 0", got)
	}
	if got := metricWith(t, b, "imbridge_dead_letter_records", nil); got != 0 {
		t.Errorf("imbridge_dead_letter_records %v; want 0", got)
	}
}
