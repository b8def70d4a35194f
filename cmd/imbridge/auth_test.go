package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/imbridge/imbridge/auth"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// TestTokenNew: the printed token hashes to the printed token_sha256, and the printed lines are a
// subscribers entry the bridge takes.
func TestTokenNew(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := token(t.Context(), []string{"new", "--name", "moderation", "--groups", "moderation", "--decide", "--sources", "openim"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	tok := ""
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "imb_") {
			tok = line
		}
	}
	_, entry, ok := strings.Cut(text, "--config file:\n")
	if tok == "" || !ok {
		t.Fatalf("output %q: want a token line and the entry", text)
	}
	var subs []auth.Subscriber
	if err := yaml.Unmarshal([]byte(entry), &subs); err != nil || len(subs) != 1 {
		t.Fatalf("entry %q: %v", entry, err)
	}
	s := subs[0]
	if s.Name != "moderation" || s.TokenSHA256 != auth.HashSecret(tok) || !s.Scopes.Decide || s.Scopes.Groups[0] != "moderation" || s.Scopes.Sources[0] != "openim" {
		t.Errorf("entry %+v for token %s", s, tok)
	}
	if strings.Contains(entry, tok) {
		t.Error("the entry holds the token itself")
	}
	if _, err := auth.New(auth.Config{Subscribers: subs}); err != nil {
		t.Errorf("the bridge refuses the entry: %v", err)
	}
	var hashed bytes.Buffer
	if err := token(t.Context(), []string{"hash"}, strings.NewReader("s3cret\n"), &hashed); err != nil || strings.TrimSpace(hashed.String()) != auth.HashSecret("s3cret") {
		t.Errorf("token hash: %q, %v", hashed.String(), err)
	}
}

// TestServeGuarded: the real binary with callers and subscribers configured. The IM servers' own
// ways in (send does what OpenIM and Tencent do) pass; without them nothing does; reflection is off;
// a subscriber needs its token; no door is reported open.
func TestServeGuarded(t *testing.T) {
	t.Parallel()
	tok, sum := auth.NewToken()
	cfg := writePolicies(t, `
callers:
  openim:
    basic_user: imbridge
    basic_password_sha256: `+auth.HashSecret("s3cret")+`
    path_secret_sha256: `+auth.HashSecret("p4th")+`
  tencent:
    apps: [{sdkappid: "1400000000", token: xxxxyyyy}]
subscribers:
  - {name: audit, token_sha256: `+sum+`, scopes: {groups: [audit]}}
`)
	p := startServe(t, t.TempDir(), "--config", cfg)
	if strings.Contains(p.logText(), "OPEN:") {
		t.Errorf("a door reported open:\n%s", p.logText())
	}
	base := "http://" + p.httpAddr
	for _, args := range [][]string{
		{"--url", "http://imbridge:s3cret@" + p.httpAddr, "--path-secret", "p4th", "openim-after-quit-group"},
		{"--url", base, "--tencent-token", "xxxxyyyy", "tencent-after-member-exit"},
	} {
		var out bytes.Buffer
		if err := send(t.Context(), args, &out); err != nil {
			t.Errorf("send %v: %v\n%s", args, err, out.String())
		}
	}
	for _, args := range [][]string{
		{"--url", base, "openim-after-quit-group"},
		{"--url", base, "tencent-after-member-exit"},
	} {
		var out bytes.Buffer
		if err := send(t.Context(), args, &out); err == nil || !strings.Contains(out.String(), "401") {
			t.Errorf("send %v without credentials: %v\n%s; want 401", args, err, out.String())
		}
	}

	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err == nil {
		// The refused stream may end before the request is sent: Recv has the status then.
		_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("reflection with tokens configured: %v; want Unimplemented (off)", err)
	}
	subscribe := func(ctx context.Context) error {
		s, err := pb.NewEventServiceClient(conn).Subscribe(ctx)
		if err != nil {
			return err
		}
		// A refused stream may end before the subscription is sent: Recv has the status then.
		_ = s.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: &pb.Subscription{Group: "audit"}}})
		resp, err := s.Recv()
		if err == nil && resp.GetSubscribed() == nil {
			t.Errorf("first response %v", resp)
		}
		return err
	}
	if err := subscribe(t.Context()); status.Code(err) != codes.Unauthenticated {
		t.Errorf("subscribe without a token: %v; want Unauthenticated", err)
	}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok))
	defer cancel()
	if err := subscribe(ctx); err != nil {
		t.Errorf("subscribe with the token: %v", err)
	}
}
