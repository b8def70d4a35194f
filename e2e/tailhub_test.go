package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// postTencentExit posts a Tencent member exit from group, with a request id of its own.
func postTencentExit(t *testing.T, b *bridgetest.Bridge, group string, n int) {
	t.Helper()
	body := []byte(`{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"` + group + `","Type":"Public","ExitType":"Quit","ExitMemberList":[{"Member_Account":"u"}],"EventTime":1670574414123}`)
	qs := fmt.Sprintf("?SdkAppid=1400000000&CallbackCommand=Group.CallbackAfterMemberExit&contenttype=json&ClientIP=10.0.0.7&OptPlatform=iOS&RequestID=hub-%d", n)
	if code, out := b.Post(t, http.MethodPost, "/tencent"+qs, nil, body); code != http.StatusOK {
		t.Fatalf("post: %d %s", code, out)
	}
}

// label names an event by its source and IM group, as the test posts them.
func label(ev *pb.Event) string {
	switch ev.Source {
	case pb.Source_SOURCE_OPENIM:
		return "openim/" + ev.GetMemberQuit().GetGroupId()
	case pb.Source_SOURCE_TENCENT:
		return "tencent/" + ev.GetMemberQuit().GetGroupId()
	}
	return ev.Source.String()
}

// TestTailsShareOneReader: the live tails of an instance read the log through one consumer, each
// getting exactly what its filter selects (by subject, or by decoding for group ids), in order.
func TestTailsShareOneReader(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	type tail struct {
		name string
		sub  *bridgetest.Sub
		want []string
	}
	all := []string{"openim/G1", "tencent/G1", "openim/G2", "tencent/G2", "openim/G2"}
	tails := []*tail{
		{name: "openim quits (by subject)", sub: b.Subscribe(t, &pb.Subscription{Filter: &pb.EventFilter{
			Sources: []pb.Source{pb.Source_SOURCE_OPENIM}, Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_MEMBER_QUIT},
		}}), want: []string{"openim/G1", "openim/G2", "openim/G2"}},
		{name: "tencent (by subject)", sub: b.Subscribe(t, &pb.Subscription{Filter: &pb.EventFilter{
			Sources: []pb.Source{pb.Source_SOURCE_TENCENT},
		}}), want: []string{"tencent/G1", "tencent/G2"}},
		{name: "group G2 (decoded)", sub: b.Subscribe(t, &pb.Subscription{Filter: &pb.EventFilter{
			GroupIds: []string{"G2"},
		}}), want: []string{"openim/G2", "tencent/G2", "openim/G2"}},
	}
	for i := range 17 {
		tails = append(tails, &tail{name: fmt.Sprintf("everything %d", i), sub: b.Subscribe(t, &pb.Subscription{}), want: all})
	}

	ctx, cancel := context.WithTimeout(context.Background(), bridgetest.Timeout)
	defer cancel()
	stream, err := b.Log.JetStream().Stream(ctx, b.Log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	if n := stream.CachedInfo().State.Consumers; n != 1 {
		t.Errorf("%d live tails use %d consumers of the log; want 1", len(tails), n)
	}

	postQuit(t, b, "G1")
	postTencentExit(t, b, "G1", 1)
	postQuit(t, b, "G2")
	postTencentExit(t, b, "G2", 2)
	postQuit(t, b, "G2")
	for _, tl := range tails {
		for i, want := range tl.want {
			if got := label(tl.sub.Next()); got != want {
				t.Fatalf("tail %s: event %d is %s; want %s (all: %v)", tl.name, i, got, want, tl.want)
			}
		}
	}
}

// TestTailReaderRestarts: the instance's reader stops with its last tail and starts with the next
// one, which gets what is stored after it subscribed, and nothing stored before.
func TestTailReaderRestarts(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	const rounds = 5
	for i := range rounds {
		tail := b.Subscribe(t, &pb.Subscription{})
		group := fmt.Sprintf("G%d", i)
		postQuit(t, b, group)
		if got := tail.Next().GetMemberQuit().GetGroupId(); got != group {
			t.Fatalf("tail %d got the quit from %s; want %s, stored after it subscribed", i, got, group)
		}
		tail.Cancel()
		bridgetest.WaitFor(t, "the tail counted out", func() bool { return b.Server.Subscribers() == 0 })
	}
	// Each reader made a consumer of its own (a stopped one lingers until it is inactive).
	stream, err := b.Log.JetStream().Stream(t.Context(), b.Log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	if n := stream.CachedInfo().State.Consumers; n != rounds {
		t.Errorf("%d consumers after %d tails one after the other; want %d: a reader each", n, rounds, rounds)
	}
}

// TestSlowTailDoesNotHoldOthers: a tail that stops reading is cut off while the others on the
// instance's reader get every event.
func TestSlowTailDoesNotHoldOthers(t *testing.T) {
	t.Parallel()
	const posted = 200
	// Room for 32 events, with the reading tail's: on a busy machine, it is not always scheduled.
	b := bridgetest.Start(t, bridgetest.Options{MaxUnackedBytes: 256 << 10})
	slow := slowTail(t, b)
	fast := b.Subscribe(t, &pb.Subscription{})

	got := make(chan int)
	go func() {
		n := 0
		for range posted {
			if _, err := fast.Stream.Recv(); err != nil {
				break
			}
			n++
		}
		got <- n
	}()
	postPaddedBy4(t, b, posted)
	if n := <-got; n != posted {
		t.Fatalf("the reading tail got %d events of %d", n, posted)
	}
	if cut := metricValue(t, b, "imbridge_tail_cutoffs_total"); cut != 1 {
		t.Fatalf("%v tails cut off; want the one that does not read", cut)
	}
	for {
		if _, err := slow.Recv(); err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("slow tail ended with %v; want ResourceExhausted", err)
			}
			break
		}
	}
}

// TestTailsEndWhenTheLogGoes: when the instance's reader loses the log, its tails end with
// Unavailable, so that they reconnect elsewhere.
func TestTailsEndWhenTheLogGoes(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	tails := []*bridgetest.Sub{b.Subscribe(t, &pb.Subscription{}), b.Subscribe(t, &pb.Subscription{Filter: &pb.EventFilter{GroupIds: []string{"G"}}})}
	b.CutNATS()
	for i, tail := range tails {
		if err := tail.End(); status.Code(err) != codes.Unavailable {
			t.Errorf("tail %d ended with %v; want Unavailable", i, err)
		}
	}
}
