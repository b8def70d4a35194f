package server

import (
	"context"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// TestVerdictRouting: a verdict for a callback waiting on this instance is settled directly; one for
// another instance travels over NATS. Two routers on one connection stand for two instances.
func TestVerdictRouting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := openLog(t)
	here, there := twoRouters(t, log)
	refuse := &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "no"}
	for i, tc := range []struct {
		name   string
		sender *verdictRouter
	}{
		{"same instance", here},
		{"other instance", there},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "ev" + strconv.Itoa(i)
			w := here.register(id, []string{"g1", "g2"})
			defer here.unregister(id)
			to := here.subject(id)
			for _, send := range []struct {
				group string
				v     *pb.Verdict
			}{
				{"other", refuse}, // not awaited: dropped
				{"g1", allowVerdict},
				{"g1", refuse}, // second answer of g1: dropped
				{"g2", allowVerdict},
			} {
				if err := tc.sender.send(log.Conn(), to, send.group, send.v); err != nil {
					t.Fatal(err)
				}
			}
			v, _, _ := w.wait(ctx, 2, time.Minute, FailRefuse)
			if refused(v) {
				t.Errorf("verdict %v; want allow (a refusal that was not awaited counted)", v)
			}
		})
	}
}

// TestMergeAllowKeepsItsInputs: merging replacement fields must not change the verdicts merged,
// which may be shared (allowVerdict, a decider's own message).
func TestMergeAllowKeepsItsInputs(t *testing.T) {
	t.Parallel()
	first := &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW, GroupInfo: &pb.GroupInfoChanged{Name: proto.String("a")}}
	second := &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW, GroupInfo: &pb.GroupInfoChanged{Notification: proto.String("n")}}
	firstBefore, secondBefore := proto.Clone(first), proto.Clone(second)

	got := mergeAllow(mergeAllow(mergeAllow(nil, allowVerdict), first), second)
	want := &pb.GroupInfoChanged{Name: proto.String("a"), Notification: proto.String("n")}
	if !proto.Equal(got.GetGroupInfo(), want) {
		t.Errorf("merged %v; want %v", got.GetGroupInfo(), want)
	}
	if allowVerdict.GroupInfo != nil || !proto.Equal(first, firstBefore) || !proto.Equal(second, secondBefore) {
		t.Errorf("inputs changed: allowVerdict %v, first %v, second %v", allowVerdict, first, second)
	}
}

// BenchmarkVerdictRouting: one verdict from a decider to the callback waiting for it, on the same
// instance (settled directly) and on another (over NATS, the embedded server's loopback pipe).
func BenchmarkVerdictRouting(b *testing.B) {
	ctx := context.Background()
	log := openLog(b)
	here, there := twoRouters(b, log)
	for _, bc := range []struct {
		name   string
		sender *verdictRouter
	}{
		{"same-instance", here},
		{"other-instance", there},
	} {
		b.Run(bc.name, func(b *testing.B) {
			groups := []string{"g"}
			for i := 0; b.Loop(); i++ {
				id := strconv.Itoa(i)
				w := here.register(id, groups)
				if err := bc.sender.send(log.Conn(), here.subject(id), "g", allowVerdict); err != nil {
					b.Fatal(err)
				}
				if v, _, _ := w.wait(ctx, 1, time.Minute, FailRefuse); refused(v) {
					b.Fatal("refused")
				}
				here.unregister(id)
			}
		})
	}
}
