package e2e

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// postOp posts an OpenIM member-quit callback of group with an operationID header ("": none).
func postOp(t *testing.T, b *bridgetest.Bridge, operationID, group string) string {
	t.Helper()
	var h http.Header
	if operationID != "" {
		h = http.Header{"operationID": {operationID}}
	}
	body := []byte(`{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"` + group + `","userID":"u"}`)
	status, out, err := b.Do(http.MethodPost, "/openim/callbackAfterQuitGroupCommand", h, body)
	if err != nil {
		t.Error(err)
		return ""
	}
	if status != http.StatusOK {
		t.Errorf("post: %d %s", status, out)
	}
	return string(out)
}

// nextGroups reads events from sub until the marker group, acking them, and returns their IM group
// ids in order.
func nextGroups(t *testing.T, sub *bridgetest.Sub, marker string) []string {
	t.Helper()
	var got []string
	for {
		ev := sub.Next()
		sub.Ack(ev.Id)
		g := ev.GetMemberQuit().GetGroupId()
		if g == marker {
			return got
		}
		got = append(got, g)
	}
}

// TestRetriesStoredOnce: an OpenIM callback posted again with the same operationID and body (a retry)
// is answered like the first and stored once, also when the copies arrive together; callbacks
// without an operationID, or with another body, are never taken for one another. The effect checked
// is what a subscriber receives.
func TestRetriesStoredOnce(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "g", MaxInFlight: 100})
	first := postOp(t, b, "op-1", "G1")
	if again := postOp(t, b, "op-1", "G1"); again != first {
		t.Errorf("retry answered %s; want the first's answer %s", again, first)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); postOp(t, b, "op-2", "G2") }()
	}
	wg.Wait()
	postOp(t, b, "op-1", "G3") // same operation, another callback body
	postOp(t, b, "", "G4")
	postOp(t, b, "", "G4") // no operationID: two events, however alike
	postOp(t, b, "", "end")
	got := nextGroups(t, sub, "end")
	want := []string{"G1", "G2", "G3", "G4", "G4"}
	if len(got) != len(want) {
		t.Fatalf("subscriber got %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("subscriber got %v; want %v", got, want)
		}
	}
	if n := metricWith(t, b, "imbridge_callback_duplicates_total", nil); n != 20 {
		t.Errorf("imbridge_callback_duplicates_total %v; want 20 (1 retry of op-1, 19 copies of op-2)", n)
	}
	if n := metricWith(t, b, "imbridge_callbacks_total", map[string]string{"vendor": "openim", "command": "callbackAfterQuitGroupCommand", "phase": "after", "answer": "duplicate"}); n != 20 {
		t.Errorf(`imbridge_callbacks_total{answer="duplicate"} %v; want 20`, n)
	}
}

// TestTencentRetryStoredOnce: Tencent's RequestID identifies a retry.
func TestTencentRetryStoredOnce(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	b := bridgetest.Start(t, bridgetest.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	sub := b.Subscribe(t, &pb.Subscription{Group: "g"})
	post := func(requestID, group string) {
		t.Helper()
		body := []byte(`{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"` + group + `","Type":"Public","ExitType":"Quit","Operator_Account":"u","ExitMemberList":[{"Member_Account":"u"}],"EventTime":1}`)
		q := "/tencent?SdkAppid=1&CallbackCommand=Group.CallbackAfterMemberExit&contenttype=json&RequestID=" + requestID
		if status, out := b.Post(t, http.MethodPost, q, nil, body); status != http.StatusOK {
			t.Fatalf("post: %d %s", status, out)
		}
	}
	post("r-1", "G1")
	post("r-1", "G1")
	post("r-2", "end")
	got := nextGroups(t, sub, "end")
	if len(got) != 1 || got[0] != "G1" {
		t.Errorf("subscriber got %v; want [G1] once", got)
	}
	// The retry's access line names no event: its copy was not stored, and no subscriber gets it.
	if line := accessLine(t, &logs, "answer=duplicate", "request_id=r-1"); strings.Contains(line, " event=") {
		t.Errorf("duplicate's access line names an event: %s", line)
	}
	if line := accessLine(t, &logs, "answer=ok", "request_id=r-1"); !strings.Contains(line, " event=") {
		t.Errorf("first's access line names no event: %s", line)
	}
}

// TestRetryAtAnotherInstance: a retry reaching another instance on the same log is dropped by the
// log itself when the first was stored as a record of its own (Nats-Msg-Id).
func TestRetryAtAnotherInstance(t *testing.T) {
	t.Parallel()
	url := bridgetest.ExternalNATS(t)
	a := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	b := bridgetest.Start(t, bridgetest.Options{NATSURL: url})
	sub := a.Subscribe(t, &pb.Subscription{Group: "g"})
	for i := range 5 {
		op := "op-" + strconv.Itoa(i)
		postOp(t, a, op, "G"+strconv.Itoa(i))
		postOp(t, b, op, "G"+strconv.Itoa(i))
	}
	postOp(t, b, "", "end")
	if got := nextGroups(t, sub, "end"); len(got) != 5 {
		t.Errorf("subscriber got %v; want G0-G4 once each", got)
	}
}
