package main

import (
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// TestDLQCommand: imbridge dlq lists, shows, redrives and purges the dead letters of a real bridge.
func TestDLQCommand(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	stream := subscribeTo(t, p.grpcAddr, &pb.Subscription{Group: "poison", MaxDeliveries: 1})
	if status, body := postBody(t, "http://"+p.httpAddr+"/openim/callbackAfterQuitGroupCommand", []byte(`{"groupID":"G1","userID":"u"}`)); status != http.StatusOK {
		t.Fatalf("callback: %d %s", status, body)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetEvent().GetId()
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{EventId: id, Reason: "CRM down"}}}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bridgetest.Binary(t), append(args, "--server", p.grpcAddr)...).CombinedOutput()
		return string(out), err
	}
	var out string
	bridgetest.WaitFor(t, "a dead letter", func() bool {
		out, err = run("dlq", "list")
		return err == nil && strings.Contains(out, id)
	})
	if !regexp.MustCompile(`(?m)^SEQ\s+GROUP\s+EVENT.*\n^1\s+poison\s+` + id + `\s+callbackAfterQuitGroupCommand\s+1\s+.*CRM down$`).MatchString(out) {
		t.Errorf("dlq list:\n%s", out)
	}
	out, err = run("dlq", "show", "1")
	dl := new(pb.DeadLetter)
	if err != nil || protojson.Unmarshal([]byte(out), dl) != nil || dl.GetEvent().GetMemberQuit().GetGroupId() != "G1" {
		t.Errorf("dlq show: %v\n%s", err, out)
	}
	if out, err := run("dlq", "redrive"); err == nil || !strings.Contains(out, "--group") {
		t.Errorf("dlq redrive without a group: %v\n%s; want a refusal naming --group", err, out)
	}
	if out, err := run("dlq", "redrive", "--group", "poison", "1"); err != nil || out != "redrove 1 to poison\n" {
		t.Errorf("dlq redrive: %v\n%s", err, out)
	}
	resp, err = stream.Recv()
	if err != nil || resp.GetEvent().GetId() != id {
		t.Fatalf("after redrive: %v %v; want %s again", resp, err, id)
	}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{EventId: id, Reason: "still down"}}}); err != nil {
		t.Fatal(err)
	}
	bridgetest.WaitFor(t, "the dead letter again", func() bool {
		out, err = run("dlq", "list", "--group", "poison")
		return err == nil && strings.Contains(out, "still down")
	})
	if out, err := run("dlq", "purge", "--group", "poison"); err != nil || out != "purged 1 of poison\n" {
		t.Errorf("dlq purge: %v\n%s", err, out)
	}
	if out, err := run("dlq", "show", "2"); err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("dlq show after purge: %v\n%s", err, out)
	}
}
