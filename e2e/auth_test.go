package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/imbridge/imbridge/auth"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// Credentials of the guarded bridge below.
const (
	openimUser, openimPass, openimPath = "imbridge", "s3cret", "p4th"
	tencentApp, tencentToken           = "1400000000", "xxxxyyyy"
	tokenFull, tokenAudit, tokenNoPost = "imb_full", "imb_audit", "imb_nopost"
	tokenAdmin                         = "imb_admin"
	tokenAdminAudit                    = "imb_admin_audit"
)

func guardedBridge(t *testing.T) *bridgetest.Bridge {
	t.Helper()
	return guardedBridgeLogging(t, nil)
}

// guardedBridgeLogging is guardedBridge writing its log to w (nil: discarded).
func guardedBridgeLogging(t *testing.T, w io.Writer) *bridgetest.Bridge {
	t.Helper()
	var logger *slog.Logger
	if w != nil {
		logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return bridgetest.Start(t, bridgetest.Options{Logger: logger, Auth: auth.Config{
		Callers: auth.Callers{
			OpenIM: auth.OpenIMCaller{BasicUser: openimUser, BasicPasswordSHA256: auth.HashSecret(openimPass),
				PathSecretSHA256: auth.HashSecret(openimPath), AllowCIDRs: []string{"127.0.0.0/8", "::1"}},
			Tencent: auth.TencentCaller{Apps: []auth.TencentApp{{SdkAppID: tencentApp, Token: tencentToken}}},
		},
		Subscribers: []auth.Subscriber{
			{Name: "full", TokenSHA256: auth.HashSecret(tokenFull), Scopes: auth.Scopes{Groups: []string{"*"}, Tail: true, Decide: true, Post: true}},
			{Name: "audit", TokenSHA256: auth.HashSecret(tokenAudit), Scopes: auth.Scopes{Groups: []string{"audit"}, Sources: []string{"openim"}}},
			{Name: "nopost", TokenSHA256: auth.HashSecret(tokenNoPost), Scopes: auth.Scopes{Groups: []string{"*"}, Tail: true}},
			{Name: "admin", TokenSHA256: auth.HashSecret(tokenAdmin), Scopes: auth.Scopes{Groups: []string{"*"}, Admin: true}},
			{Name: "admin-audit", TokenSHA256: auth.HashSecret(tokenAdminAudit), Scopes: auth.Scopes{Groups: []string{"audit"}, Admin: true}},
		},
	}})
}

// syncBuffer is a log sink several goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func basicAuth(user, pass string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
}

func tencentQuery(app, token string, at time.Time) string {
	q := fmt.Sprintf("/tencent?SdkAppid=%s&CallbackCommand=Group.CallbackAfterMemberExit", app)
	if token != "" {
		rt := strconv.FormatInt(at.Unix(), 10)
		q += "&RequestTime=" + rt + "&Sign=" + auth.HashSecret(token+rt)
	}
	return q
}

// TestAuthHTTP: every HTTP route with no, wrong, stale, out-of-place and right credentials. A
// refused caller gets its vendor's error body and nothing is stored.
func TestAuthHTTP(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	b := guardedBridgeLogging(t, &logs)
	quit := []byte(`{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G1","userID":"u"}`)
	exit := []byte(`{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"@TGS#1","ExitType":"Quit","ExitMemberList":[{"Member_Account":"u"}]}`)
	now := time.Now()
	quitPath := "/openim/" + openimPath + "/callbackAfterQuitGroupCommand"
	stored := streamMsgs(t, b)
	for _, tt := range []struct {
		name   string
		path   string
		header http.Header
		body   []byte
		want   int
	}{
		{"openim: no credentials", quitPath, nil, quit, http.StatusUnauthorized},
		{"openim: wrong password", quitPath, basicAuth(openimUser, "s3cre"), quit, http.StatusUnauthorized},
		{"openim: wrong user", quitPath, basicAuth("root", openimPass), quit, http.StatusUnauthorized},
		{"openim: no path secret", "/openim/callbackAfterQuitGroupCommand", basicAuth(openimUser, openimPass), quit, http.StatusUnauthorized},
		{"openim: wrong path secret", "/openim/p4tH/callbackAfterQuitGroupCommand", basicAuth(openimUser, openimPass), quit, http.StatusUnauthorized},
		{"openim: a subscriber token is no caller's", quitPath, http.Header{"Authorization": {"Bearer " + tokenFull}}, quit, http.StatusUnauthorized},
		{"tencent: unsigned", tencentQuery(tencentApp, "", now), nil, exit, http.StatusUnauthorized},
		{"tencent: other app", tencentQuery("1400000009", tencentToken, now), nil, exit, http.StatusForbidden},
		{"tencent: wrong token", tencentQuery(tencentApp, "yyyyxxxx", now), nil, exit, http.StatusUnauthorized},
		{"tencent: stale", tencentQuery(tencentApp, tencentToken, now.Add(-2*time.Minute)), nil, exit, http.StatusUnauthorized},
	} {
		status, out := b.Post(t, http.MethodPost, tt.path, tt.header, tt.body)
		if strings.HasPrefix(tt.path, "/tencent") {
			assertTencentError(t, status, out, tt.want)
		} else {
			assertOpenIMError(t, status, out, tt.want)
		}
		for _, secret := range []string{openimPass, openimPath, tencentToken, tokenFull} {
			if strings.Contains(string(out), secret) {
				t.Errorf("%s: answer %s names a secret", tt.name, out)
			}
		}
	}
	if now := streamMsgs(t, b); now != stored {
		t.Errorf("log holds %d messages after refused callbacks; want %d", now, stored)
	}
	// A refused before-set-group-info gets a refusal: an actionCode 1 answer without the group's
	// fields would blank the group (OpenIM copies them back), and the caller's body is not trusted.
	status, out := b.Post(t, http.MethodPost, "/openim/"+openimPath+"/callbackBeforeSetGroupInfoExCommand", nil, []byte(`{"groupID":"G1","groupName":"x"}`))
	assertOpenIMRefusal(t, status, out)
	// The right credentials.
	if status, out := b.Post(t, http.MethodPost, quitPath, basicAuth(openimUser, openimPass), quit); status != http.StatusOK {
		t.Errorf("openim with credentials: %d %s", status, out)
	}
	if status, out := b.Post(t, http.MethodPost, tencentQuery(tencentApp, tencentToken, now), nil, exit); status != http.StatusOK {
		t.Errorf("tencent signed: %d %s", status, out)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
		if status, _ := b.Post(t, http.MethodGet, path, nil, nil); status != http.StatusOK {
			t.Errorf("GET %s: %d; want 200 (operators' endpoints are not callers')", path, status)
		}
	}
	// The path secret in every place a curious operator or an attacker may put it.
	for _, path := range []string{"/openim/" + openimPath, "/openim/" + openimPath + "/", "/openim//" + openimPath + "//", "/openim/x/" + openimPath} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			b.Post(t, method, path, nil, nil)
		}
	}
	for _, secret := range []string{openimPass, openimPath, tencentToken, tokenFull} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log names a secret (%s):\n%s", secret, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "answer=unauthenticated") || !strings.Contains(logs.String(), "answer=forbidden") {
		t.Errorf("refusals not logged with their answer:\n%s", logs.String())
	}
}

// assertOpenIMRefusal: a refusal in OpenIM's format (actionCode 0, nextCode 1).
func assertOpenIMRefusal(t *testing.T, status int, out []byte) {
	t.Helper()
	if status != http.StatusUnauthorized || !strings.Contains(string(out), `"actionCode":0`) || !strings.Contains(string(out), `"nextCode":1`) {
		t.Errorf("refused before-set-group-info: %d %s; want 401 refusing", status, out)
	}
}

// TestAuthGroupSettings: a token may join a group within its scopes, but replacing the settings of
// a group that exists (its filter, decide, ack wait) takes the admin scope: a narrower filter set by
// one token would make the group skip events its owner should get.
func TestAuthGroupSettings(t *testing.T) {
	t.Parallel()
	b := guardedBridge(t)
	if code, msg := subscribeCode(t, b, tokenFull, &pb.Subscription{Group: "billing", Decide: true}); code != codes.OK {
		t.Fatalf("owner: %v %s", code, msg)
	}
	bridgetest.WaitFor(t, "owner gone", func() bool { return b.Server.Members("billing") == 0 })
	for _, tt := range []struct {
		name, token string
		sub         *pb.Subscription
		want        codes.Code
	}{
		{"narrower filter", tokenNoPost, &pb.Subscription{Group: "billing", Filter: &pb.EventFilter{GroupIds: []string{"X"}}}, codes.FailedPrecondition},
		{"decide off", tokenNoPost, &pb.Subscription{Group: "billing"}, codes.FailedPrecondition},
		{"same settings", tokenFull, &pb.Subscription{Group: "billing", Decide: true}, codes.OK},
	} {
		code, msg := subscribeCode(t, b, tt.token, tt.sub)
		if code != tt.want {
			t.Errorf("%s: %v %s; want %v", tt.name, code, msg, tt.want)
		}
		bridgetest.WaitFor(t, "member gone", func() bool { return b.Server.Members("billing") == 0 })
	}
	if code, msg := subscribeCode(t, b, tokenAdmin, &pb.Subscription{Group: "billing"}); code != codes.OK {
		t.Errorf("admin replacing the settings: %v %s", code, msg)
	}
}

func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// subscribeCode opens a subscription with a token and returns the code it got: OK once subscribed.
func subscribeCode(t *testing.T, b *bridgetest.Bridge, token string, sub *pb.Subscription) (codes.Code, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(withToken(t.Context(), token), bridgetest.Timeout)
	defer cancel()
	stream, err := b.Events.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A refused stream may end before the subscription is sent: Recv has the status then.
	_ = stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}})
	_, err = stream.Recv()
	return status.Code(err), fmt.Sprint(err)
}

// TestAuthGRPC: every gRPC method with no, unknown, out-of-scope and right tokens; the callback RPCs
// also with the vendor's own credentials. Before, anyone reaching the gRPC port could read every
// event, decide, and post forged callbacks (a Tencent AfterMemberExit was stored and delivered).
func TestAuthGRPC(t *testing.T) {
	t.Parallel()
	b := guardedBridge(t)
	openimQuits := &pb.EventFilter{Sources: []pb.Source{pb.Source_SOURCE_OPENIM}}
	for _, tt := range []struct {
		name, token string
		sub         *pb.Subscription
		want        codes.Code
		msg         string
	}{
		{"no token", "", &pb.Subscription{Group: "audit"}, codes.Unauthenticated, "missing token"},
		{"unknown token", "imb_guess", &pb.Subscription{Group: "audit"}, codes.Unauthenticated, "unknown token"},
		{"other group", tokenAudit, &pb.Subscription{Group: "payments", Filter: openimQuits}, codes.PermissionDenied, "consumer group payments"},
		{"more than its sources", tokenAudit, &pb.Subscription{Group: "audit"}, codes.PermissionDenied, "filter.sources"},
		{"decide without the scope", tokenAudit, &pb.Subscription{Group: "audit", Decide: true, Filter: openimQuits}, codes.PermissionDenied, "decide"},
		{"tail without the scope", tokenAudit, &pb.Subscription{Filter: openimQuits}, codes.PermissionDenied, "live tails"},
		{"within scope", tokenAudit, &pb.Subscription{Group: "audit", Filter: openimQuits}, codes.OK, ""},
		{"decider", tokenFull, &pb.Subscription{Group: "mod", Decide: true}, codes.OK, ""},
	} {
		if code, msg := subscribeCode(t, b, tt.token, tt.sub); code != tt.want || !strings.Contains(msg, tt.msg) {
			t.Errorf("Subscribe, %s: %v %s; want %v %q", tt.name, code, msg, tt.want, tt.msg)
		}
	}

	stored := streamMsgs(t, b)
	forged := &pb.TencentMemberExitRequest{GroupId: "@TGS#forged", ExitType: "Kicked"}
	tencent := pb.NewTencentCallbackServiceClient(b.Conn)
	rt := strconv.FormatInt(time.Now().Unix(), 10)
	for _, tt := range []struct {
		name string
		ctx  context.Context
		call func(context.Context) error
		want codes.Code
	}{
		{"tencent, no credentials", t.Context(), func(ctx context.Context) error { _, err := tencent.AfterMemberExit(ctx, forged); return err }, codes.Unauthenticated},
		{"tencent, token without post", withToken(t.Context(), tokenNoPost), func(ctx context.Context) error { _, err := tencent.AfterMemberExit(ctx, forged); return err }, codes.PermissionDenied},
		{"tencent, wrong sign", metadata.AppendToOutgoingContext(t.Context(), "sdkappid", tencentApp, "requesttime", rt, "sign", auth.HashSecret("guess"+rt)),
			func(ctx context.Context) error { _, err := tencent.AfterMemberExit(ctx, forged); return err }, codes.Unauthenticated},
		{"openim, no credentials", t.Context(), func(ctx context.Context) error {
			_, err := b.OpenIM.AfterQuitGroup(ctx, &pb.OpenIMQuitGroupRequest{GroupId: "G1"})
			return err
		}, codes.Unauthenticated},
		{"openim, Basic (a path secret is configured: not enough)", metadata.NewOutgoingContext(t.Context(), metadata.Pairs("authorization", basicAuth(openimUser, openimPass).Get("Authorization"))),
			func(ctx context.Context) error {
				_, err := b.OpenIM.AfterQuitGroup(ctx, &pb.OpenIMQuitGroupRequest{GroupId: "G1"})
				return err
			}, codes.Unauthenticated},
	} {
		if err := tt.call(tt.ctx); status.Code(err) != tt.want {
			t.Errorf("%s: %v; want %v", tt.name, err, tt.want)
		}
	}
	if now := streamMsgs(t, b); now != stored {
		t.Errorf("log holds %d messages after refused callbacks; want %d", now, stored)
	}
	// The right credentials: a token with post, or Tencent's Sign as metadata.
	if _, err := b.OpenIM.AfterQuitGroup(withToken(t.Context(), tokenFull), &pb.OpenIMQuitGroupRequest{GroupId: "G1"}); err != nil {
		t.Errorf("openim with a post token: %v", err)
	}
	signed := metadata.AppendToOutgoingContext(t.Context(), "sdkappid", tencentApp, "requesttime", rt, "sign", auth.HashSecret(tencentToken+rt))
	if _, err := tencent.AfterMemberExit(signed, &pb.TencentMemberExitRequest{GroupId: "@TGS#1", ExitType: "Quit"}); err != nil {
		t.Errorf("tencent signed over gRPC: %v", err)
	}
}
