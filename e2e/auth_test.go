package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
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
)

func guardedBridge(t *testing.T) *bridgetest.Bridge {
	t.Helper()
	return bridgetest.Start(t, bridgetest.Options{Auth: auth.Config{
		Callers: auth.Callers{
			OpenIM: auth.OpenIMCaller{BasicUser: openimUser, BasicPasswordSHA256: auth.HashSecret(openimPass),
				PathSecretSHA256: auth.HashSecret(openimPath), AllowCIDRs: []string{"127.0.0.0/8", "::1"}},
			Tencent: auth.TencentCaller{Apps: []auth.TencentApp{{SdkAppID: tencentApp, Token: tencentToken}}},
		},
		Subscribers: []auth.Subscriber{
			{Name: "full", TokenSHA256: auth.HashSecret(tokenFull), Scopes: auth.Scopes{Groups: []string{"*"}, Tail: true, Decide: true, Post: true}},
			{Name: "audit", TokenSHA256: auth.HashSecret(tokenAudit), Scopes: auth.Scopes{Groups: []string{"audit"}, Sources: []string{"openim"}}},
			{Name: "nopost", TokenSHA256: auth.HashSecret(tokenNoPost), Scopes: auth.Scopes{Groups: []string{"*"}, Tail: true}},
		},
	}})
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
	b := guardedBridge(t)
	quit := []byte(`{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G1","userID":"u"}`)
	exit := []byte(`{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"@TGS#1","ExitType":"Quit","ExitMemberList":[{"Member_Account":"u"}]}`)
	now := time.Now()
	openimPath := "/openim/" + openimPath + "/callbackAfterQuitGroupCommand"
	stored := streamMsgs(t, b)
	for _, tt := range []struct {
		name   string
		path   string
		header http.Header
		body   []byte
		want   int
	}{
		{"openim: no credentials", openimPath, nil, quit, http.StatusUnauthorized},
		{"openim: wrong password", openimPath, basicAuth(openimUser, "s3cre"), quit, http.StatusUnauthorized},
		{"openim: wrong user", openimPath, basicAuth("root", openimPass), quit, http.StatusUnauthorized},
		{"openim: no path secret", "/openim/callbackAfterQuitGroupCommand", basicAuth(openimUser, openimPass), quit, http.StatusUnauthorized},
		{"openim: wrong path secret", "/openim/p4tH/callbackAfterQuitGroupCommand", basicAuth(openimUser, openimPass), quit, http.StatusUnauthorized},
		{"openim: a subscriber token is no caller's", openimPath, http.Header{"Authorization": {"Bearer " + tokenFull}}, quit, http.StatusUnauthorized},
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
	if status != http.StatusUnauthorized || !strings.Contains(string(out), `"nextCode":1`) {
		t.Errorf("refused before-set-group-info: %d %s; want 401 refusing", status, out)
	}
	// The right credentials.
	if status, out := b.Post(t, http.MethodPost, openimPath, basicAuth(openimUser, openimPass), quit); status != http.StatusOK {
		t.Errorf("openim with credentials: %d %s", status, out)
	}
	if status, out := b.Post(t, http.MethodPost, tencentQuery(tencentApp, tencentToken, now), nil, exit); status != http.StatusOK {
		t.Errorf("tencent signed: %d %s", status, out)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, _ := b.Post(t, http.MethodGet, path, nil, nil); status != http.StatusOK {
			t.Errorf("GET %s: %d; want 200 (operators' endpoints are not callers')", path, status)
		}
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
