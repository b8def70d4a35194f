package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// groupFloor is the floor of group's record in the groups bucket; 0 when it has none.
func groupFloor(t *testing.T, b *bridgetest.Bridge, group string) uint64 {
	t.Helper()
	e, err := b.Log.Groups().Get(t.Context(), group)
	if err != nil {
		return 0
	}
	var rec struct {
		Floor uint64 `json:"floor"`
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	return rec.Floor
}

// TestGroupComesBack: a group's consumer lives in the log's memory, so the embedded log restarted
// with the bridge has lost it; the bridge brings it back from its record, after what it acked, and
// before any member connects: it keeps what is stored meanwhile.
func TestGroupComesBack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := bridgetest.Start(t, bridgetest.Options{DataDir: dir})
	sub := b.Subscribe(t, &pb.Subscription{Group: "g"})
	c, err := b.Log.JetStream().Consumer(t.Context(), b.Log.Stream(), "g")
	if err != nil {
		t.Fatal(err)
	}
	if !c.CachedInfo().Config.MemoryStorage {
		t.Fatal("the group's consumer keeps its state on file; want memory")
	}
	for _, g := range []string{"G1", "G2", "G3"} {
		postQuit(t, b, g)
	}
	for range 2 {
		ev := sub.Next()
		sub.Ack(ev.Id)
	}
	third := sub.Next() // not acked
	bridgetest.WaitFor(t, "the floor written", func() bool { return groupFloor(t, b, "g") >= 2 })
	b.Close()

	b = bridgetest.Start(t, bridgetest.Options{DataDir: dir})
	bridgetest.WaitFor(t, "the group back", func() bool {
		_, err := b.Log.JetStream().Consumer(t.Context(), b.Log.Stream(), "g")
		return err == nil
	})
	postQuit(t, b, "G4") // stored with no member connected
	sub = b.Subscribe(t, &pb.Subscription{Group: "g"})
	for _, want := range []string{third.GetMemberQuit().GetGroupId(), "G4"} {
		ev := sub.Next()
		if got := ev.GetMemberQuit().GetGroupId(); got != want {
			t.Fatalf("after the restart the group got the quit from %s; want %s", got, want)
		}
		sub.Ack(ev.Id)
	}
}

// TestGroupComesBackAfterKill: killed, the bridge wrote no floor on its way out; the group comes
// back from the floor written last, and every event it had not acked comes again.
func TestGroupComesBackAfterKill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := bridgetest.Start(t, bridgetest.Options{DataDir: dir})
	sub := b.Subscribe(t, &pb.Subscription{Group: "g"})
	for _, g := range []string{"G1", "G2", "G3", "G4"} {
		postQuit(t, b, g)
	}
	ev := sub.Next()
	sub.Ack(ev.Id)
	bridgetest.WaitFor(t, "the first floor written", func() bool { return groupFloor(t, b, "g") >= 1 })
	ev = sub.Next()
	sub.Ack(ev.Id) // its floor may not be written: it may come again
	b.Kill()
	b.Close()

	b = bridgetest.Start(t, bridgetest.Options{DataDir: dir})
	sub = b.Subscribe(t, &pb.Subscription{Group: "g"})
	got := map[string]bool{}
	for !got["G3"] || !got["G4"] {
		ev := sub.Next()
		g := ev.GetMemberQuit().GetGroupId()
		if g == "G1" {
			t.Fatal("the event acked before the floor written came again")
		}
		got[g] = true
		sub.Ack(ev.Id)
	}
}

// TestGroupRecordUnreadable: a record the bridge cannot read (outside input: anyone with access to
// the bucket can write it) makes a join fail with the way out, and does not stop the bridge.
func TestGroupRecordUnreadable(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	for _, bad := range []string{`{`, `{"config":{"durable_name":"other","mem_storage":true,"ack_policy":"explicit"}}`, `{"config":{"durable_name":"bad","mem_storage":true,"ack_policy":"explicit","metadata":{"imbridge.filter":"!"}}}`} {
		if _, err := b.Log.Groups().Put(t.Context(), "bad", []byte(bad)); err != nil {
			t.Fatal(err)
		}
		err := subscribeErr(t, b, &pb.Subscription{Group: "bad"})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "imbridge groups delete bad") {
			t.Errorf("record %s: %v; want FailedPrecondition saying how to start again", bad, err)
		}
	}
	// The way out works: the record goes, and the group starts again.
	if _, err := pb.NewAdminServiceClient(b.Conn).DeleteGroup(t.Context(), &pb.DeleteGroupRequest{Name: "bad"}); err != nil {
		t.Fatalf("delete of a group the log lost, with an unreadable record: %v", err)
	}
	b.Subscribe(t, &pb.Subscription{Group: "bad"})
	// Each join read a bad record; the bridge's own check at startup may have read one too.
	if got := rejected(t, b, "group_record"); got < 3 || got > 4 {
		t.Errorf("imbridge_nats_rejected_total{reason=group_record} %v; want 3 (or 4)", got)
	}
}

// TestGroupDeletedStaysDeleted: deleting a group removes its record, also while the record of its
// last member's acks is being written (the write must not bring the record back, or the bridge
// would bring the group back).
func TestGroupDeletedStaysDeleted(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	admin := pb.NewAdminServiceClient(b.Conn)
	for i := range 30 {
		group := fmt.Sprintf("gone%d", i)
		sub := b.Subscribe(t, &pb.Subscription{Group: group})
		postQuit(t, b, "G")
		ev := sub.Next()
		sub.Ack(ev.Id)
		sub.Cancel() // the floor is written as the member leaves
		if _, err := admin.DeleteGroup(t.Context(), &pb.DeleteGroupRequest{Name: group, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), bridgetest.Timeout)
	defer cancel()
	b.Server.FlushGroupRecords(ctx)
	for i := range 30 {
		group := fmt.Sprintf("gone%d", i)
		if _, err := b.Log.Groups().Get(t.Context(), group); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("record of deleted group %s: %v; want none", group, err)
		}
	}
}

// TestGroupResetRecorded: a reset writes the group's new floor, and the floor of acks from before
// it, written as its last member leaves, does not land over it.
func TestGroupResetRecorded(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	admin := pb.NewAdminServiceClient(b.Conn)
	for i := range 20 {
		sub := b.Subscribe(t, &pb.Subscription{Group: "r"})
		postQuit(t, b, "G")
		for range i + 1 { // after each reset, every event stored comes again
			ev := sub.Next()
			sub.Ack(ev.Id)
		}
		// Acks go out without waiting: one the log took after the reset would move the floor again.
		bridgetest.WaitFor(t, "the acks taken", func() bool {
			c, err := b.Log.JetStream().Consumer(t.Context(), b.Log.Stream(), "r")
			return err == nil && c.CachedInfo().AckFloor.Stream == uint64(i+1)
		})
		sub.Cancel()
		waitGroupIdle(t, b, "r") // its last floor is being written now
		if _, err := admin.ResetGroup(t.Context(), &pb.ResetGroupRequest{Name: "r", To: &pb.ResetGroupRequest_Sequence{Sequence: 1}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), bridgetest.Timeout)
		b.Server.FlushGroupRecords(ctx)
		cancel()
		if f := groupFloor(t, b, "r"); f != 0 {
			c, _ := b.Log.JetStream().Consumer(t.Context(), b.Log.Stream(), "r")
			t.Fatalf("record floor %d after a reset to sequence 1; want 0 (consumer: %+v %+v)", f, c.CachedInfo().AckFloor, c.CachedInfo().Delivered)
		}
	}
}

// TestFileGroupMovesToMemory: a group an older bridge made keeps its state on file; joined with no
// member anywhere, it moves to memory, after what it acked.
func TestFileGroupMovesToMemory(t *testing.T) {
	t.Parallel()
	started := time.Now()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "old"})
	postQuit(t, b, "G1")
	postQuit(t, b, "G2")
	ev := sub.Next()
	sub.Ack(ev.Id)
	sub.Cancel()
	waitGroupIdle(t, b, "old")
	js := b.Log.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), bridgetest.Timeout)
	defer cancel()
	c, err := js.Consumer(ctx, b.Log.Stream(), "old")
	if err != nil {
		t.Fatal(err)
	}
	bridgetest.WaitFor(t, "the ack taken", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.AckFloor.Stream == 1
	})
	cfg := c.CachedInfo().Config
	cfg.MemoryStorage = false // as an older bridge made it
	if err := js.DeleteConsumer(ctx, b.Log.Stream(), "old"); err != nil {
		t.Fatal(err)
	}
	if err := b.Log.Groups().Purge(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, 2
	if _, err := js.CreateConsumer(ctx, b.Log.Stream(), cfg); err != nil {
		t.Fatal(err)
	}

	// A group moves only once the bridge has heard from the other instances (presence: 3 s), so
	// that a member elsewhere still pulling it is known.
	bridgetest.WaitFor(t, "presence settled", func() bool { return time.Since(started) > 3500*time.Millisecond })
	sub = b.Subscribe(t, &pb.Subscription{Group: "old"})
	if ev := sub.Next(); ev.GetMemberQuit().GetGroupId() != "G2" {
		t.Errorf("moved group got %v; want the quit from G2, after its floor", ev)
	}
	c, err = js.Consumer(ctx, b.Log.Stream(), "old")
	if err != nil || !c.CachedInfo().Config.MemoryStorage {
		t.Fatalf("consumer after the move: %v; want it in memory", err)
	}
	if groupFloor(t, b, "old") != 1 {
		t.Errorf("record floor %d; want 1", groupFloor(t, b, "old"))
	}
}
