package auth

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

func TestAllowSubscription(t *testing.T) {
	t.Parallel()
	r := mustRules(t, Config{Subscribers: []Subscriber{
		{Name: "audit", TokenSHA256: HashSecret("a"), Scopes: Scopes{Groups: []string{"audit"}, Sources: []string{"openim"}, Kinds: []string{"member_quit"}}},
		{Name: "mod", TokenSHA256: HashSecret("m"), Scopes: Scopes{Groups: []string{"*"}, Decide: true, Tail: true}},
	}})
	audit, mod := r.tokens[sha(t, "a")], r.tokens[sha(t, "m")]
	openimQuits := &pb.EventFilter{Sources: []pb.Source{pb.Source_SOURCE_OPENIM}, Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_MEMBER_QUIT}}
	for _, tt := range []struct {
		name string
		p    *Principal
		sub  *pb.Subscription
		want string // "" allowed; else part of the PermissionDenied message
	}{
		{"within scope", audit, &pb.Subscription{Group: "audit", Filter: openimQuits}, ""},
		{"other group", audit, &pb.Subscription{Group: "other", Filter: openimQuits}, "may not join consumer group other"},
		{"tail", audit, &pb.Subscription{Filter: openimQuits}, "live tails"},
		{"decide", audit, &pb.Subscription{Group: "audit", Decide: true, Filter: openimQuits}, "may not decide"},
		{"filter wider than scope", audit, &pb.Subscription{Group: "audit"}, "filter.sources is empty"},
		{"other source", audit, &pb.Subscription{Group: "audit", Filter: &pb.EventFilter{Sources: []pb.Source{pb.Source_SOURCE_TENCENT}, Kinds: openimQuits.Kinds}}, "SOURCE_TENCENT is not within"},
		{"any group, decide, tail", mod, &pb.Subscription{Group: "anything", Decide: true}, ""},
		{"tail allowed", mod, &pb.Subscription{}, ""},
		{"open bridge", nil, &pb.Subscription{Group: "x", Decide: true}, ""},
	} {
		ctx := context.Background()
		if tt.p != nil {
			ctx = WithPrincipal(ctx, tt.p)
		}
		err := AllowSubscription(ctx, tt.sub)
		if tt.want == "" && err != nil || tt.want != "" && (status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: %v; want %q", tt.name, err, tt.want)
		}
	}
}

func sha(t *testing.T, token string) [32]byte {
	t.Helper()
	b, err := sha256Hex(HashSecret(token))
	if err != nil {
		t.Fatal(err)
	}
	return [32]byte(b)
}
