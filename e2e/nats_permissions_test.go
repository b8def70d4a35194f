package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// natsFromDeployConfig runs a NATS server from deploy/nats as shipped (only its address and store
// directory changed) and returns its host:port.
func natsFromDeployConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"nats-server.conf", "imbridge-permissions.conf"} {
		b, err := os.ReadFile(filepath.Join("..", "deploy", "nats", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts, err := natsserver.ProcessConfigFile(filepath.Join(dir, "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.StoreDir, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, t.TempDir(), true, true
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(bridgetest.Timeout) {
		t.Fatal("nats not ready")
	}
	return ns.Addr().String()
}

// TestNATSPermissions: the NATS configuration the README gives (deploy/nats) lets the bridge do all
// it does, and keeps other clients from writing events or verdicts.
func TestNATSPermissions(t *testing.T) {
	t.Setenv("IMBRIDGE_NATS_PASSWORD", "bridge-secret")
	t.Setenv("APP_NATS_PASSWORD", "app-secret")
	addr := natsFromDeployConfig(t)
	bridgeURL := "nats://imbridge:bridge-secret@" + addr

	// The bridge itself: stream, callbacks, a group member that acks, a live tail, a decider.
	b := bridgetest.Start(t, bridgetest.Options{NATSURL: bridgeURL})
	member := b.Subscribe(t, &pb.Subscription{Group: "audit"})
	tail := b.Subscribe(t, &pb.Subscription{})
	dec := b.Subscribe(t, &pb.Subscription{Group: "mod", Decide: true, Filter: &pb.EventFilter{Commands: []string{"callbackBeforeSetGroupInfoExCommand"}}})
	postQuit(t, b, "G1")
	ev := member.Next()
	member.Ack(ev.Id)
	if got := tail.Next(); got.Id != ev.Id {
		t.Errorf("tail got %s; want %s", got.Id, ev.Id)
	}
	ch := postAsync(t, b, beforeEx, []byte(`{"groupID":"G2","groupName":"x"}`))
	dec.Decide(dec.Next().Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "no"})
	if a := waitAnswer(t, ch); a.status != http.StatusOK || !strings.Contains(a.body, `"nextCode":1`) {
		t.Errorf("before-callback answered %d %s; want the refusal", a.status, a.body)
	}

	// An ordered group handed over to another instance: its pin is let go of (UNPIN), and the new
	// reader catches up (consumer info) before anything goes out. Without the unpin, the handover
	// would wait out the 45 s pin timeout, past bridgetest.Timeout.
	ordered := &pb.Subscription{Group: "ordered", Order: pb.Order_ORDER_IM_GROUP, Start: pb.StartPosition_START_POSITION_NEW}
	o1 := b.Subscribe(t, ordered)
	storeRecord(t, b, orderedEvent("A", 0))
	o1.Next()
	other := bridgetest.Start(t, bridgetest.Options{NATSURL: bridgeURL})
	o2 := other.Subscribe(t, ordered)
	o1.Cancel()
	if ev := o2.Next(); ev.Id != "A-0" {
		t.Errorf("ordered group on the other instance: %s; want A-0", ev.Id)
	}

	// Presence: a callback posted to the other instance waits for the decider connected here.
	bridgetest.WaitFor(t, "the other instance knows the decider", func() bool {
		g, err := pb.NewAdminServiceClient(other.Conn).GetGroup(t.Context(), &pb.GetGroupRequest{Name: "mod"})
		return err == nil && g.MembersElsewhere == 1
	})
	ch = postAsync(t, other, beforeEx, []byte(`{"groupID":"G3","groupName":"y"}`))
	dec.Decide(dec.Next().Id, &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: "no"})
	if a := waitAnswer(t, ch); a.status != http.StatusOK || !strings.Contains(a.body, `"nextCode":1`) {
		t.Errorf("before-callback on the other instance answered %d %s; want the refusal of the decider here", a.status, a.body)
	}

	// Nacks, redelivery entries, dead letters and their redrive and purge.
	poison := b.Subscribe(t, &pb.Subscription{Group: "poison", MaxDeliveries: 1, Start: pb.StartPosition_START_POSITION_NEW})
	storeRecord(t, b, quitEvent("p1", "G"), quitEvent("p2", "G"))
	poison.Next()
	poison.Next()
	poison.Ack("p1")
	poison.Nack("bad", 0, "p2")
	admin := pb.NewAdminServiceClient(b.Conn)
	dead := waitDeadLetters(t, admin, "poison", 1)
	if dead[0].EventId != "p2" {
		t.Errorf("dead letter %v; want p2 alone", dead[0])
	}
	if _, err := admin.GetDeadLetter(t.Context(), &pb.GetDeadLetterRequest{Sequence: dead[0].Sequence}); err != nil {
		t.Errorf("get dead letter: %v", err)
	}
	if r, err := admin.RedriveDeadLetters(t.Context(), &pb.RedriveDeadLettersRequest{Group: "poison"}); err != nil || r.Redriven != 1 {
		t.Errorf("redrive: %v %v", r, err)
	}
	if ev := poison.Next(); ev.Id != "p2" {
		t.Errorf("redriven: %s; want p2", ev.Id)
	}
	poison.Nack("still bad", 0, "p2")
	waitDeadLetters(t, admin, "poison", 1)
	if p, err := admin.PurgeDeadLetters(t.Context(), &pb.PurgeDeadLettersRequest{Group: "poison"}); err != nil || p.Purged != 1 {
		t.Errorf("purge: %v %v", p, err)
	}

	// What the bridge does that the test above does not show deterministically: an ack the log
	// confirms, and verdicts between instances over NATS.
	nc, js := natsClient(t, bridgeURL)
	c, err := js.CreateConsumer(t.Context(), b.Log.Stream(), jetstream.ConsumerConfig{Durable: "check", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create consumer as the bridge: %v", err)
	}
	batch, err := c.Fetch(1)
	if err != nil {
		t.Fatalf("pull as the bridge: %v", err)
	}
	for msg := range batch.Messages() {
		if err := msg.DoubleAck(t.Context()); err != nil {
			t.Errorf("ack as the bridge: %v", err)
		}
	}
	verdicts, err := nc.SubscribeSync("imbridge.verdicts.instance.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("imbridge.verdicts.instance.ev1", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := verdicts.NextMsg(bridgetest.Timeout); err != nil {
		t.Errorf("verdict between bridges: %v", err)
	}

	// Another client (account APP) publishes an event and a verdict on the bridge's subjects: they
	// reach neither the stream nor the instance listening.
	app, _ := natsClient(t, "nats://app:app-secret@"+addr)
	stored := streamMsgs(t, b)
	for _, subject := range []string{quitSubject, "imbridge.verdicts.instance.forged"} {
		if err := app.Publish(subject, []byte("forged")); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Flush(); err != nil { // the server has routed both publishes
		t.Fatal(err)
	}
	if err := nc.Publish("imbridge.verdicts.instance.marker", nil); err != nil {
		t.Fatal(err)
	}
	if msg, err := verdicts.NextMsg(bridgetest.Timeout); err != nil || msg.Subject != "imbridge.verdicts.instance.marker" {
		t.Errorf("bridge's next verdict message: %v, %v; want the marker, not the other account's", msgSubject(msg), err)
	}
	if now := streamMsgs(t, b); now != stored {
		t.Errorf("stream holds %d messages after the other account's publish; want %d", now, stored)
	}
}

func msgSubject(m *nats.Msg) string {
	if m == nil {
		return "<none>"
	}
	return fmt.Sprintf("%s %q", m.Subject, m.Data)
}
