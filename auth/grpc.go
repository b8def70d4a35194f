package auth

import (
	"context"
	"crypto/sha256"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Method prefixes of the gRPC services, by who may call them.
const (
	openimService  = "/imbridge.v1.OpenIMCallbackService/"
	tencentService = "/imbridge.v1.TencentCallbackService/"
	adminService   = "/imbridge.v1.AdminService/"
	healthService  = "/grpc.health.v1.Health/"
	reflection     = "/grpc.reflection."
)

// UnaryInterceptor authenticates unary calls (the callback RPCs) and puts the caller's Principal,
// if any, in the context.
func (r *Rules) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := r.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor authenticates streams (Subscribe) and puts the subscriber's Principal in the
// stream's context; the service checks the subscription against it (AllowSubscription).
func (r *Rules) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := r.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &authedStream{ServerStream: ss, ctx: ctx})
	}
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }

// authorize decides a call by its method: health and reflection are open (the app registers
// reflection only where configured); callback RPCs need a token with the post scope or the vendor's
// credentials; everything else (Subscribe, and the AdminService with the admin scope) needs a
// subscriber token, once any is configured.
func (r *Rules) authorize(ctx context.Context, method string) (context.Context, error) {
	switch {
	case strings.HasPrefix(method, healthService), strings.HasPrefix(method, reflection):
		return ctx, nil
	case strings.HasPrefix(method, openimService):
		return r.authorizeCallback(ctx, r.openim.configured, r.openimOverGRPC)
	case strings.HasPrefix(method, tencentService):
		return r.authorizeCallback(ctx, r.tencent.configured, r.tencentOverGRPC)
	}
	if !r.SubscribersConfigured() {
		return ctx, nil
	}
	p, err := r.caller(ctx)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, status.Error(codes.Unauthenticated, "missing token: send metadata authorization: Bearer <token>")
	}
	if strings.HasPrefix(method, adminService) && !p.MayManageGroups() {
		return nil, status.Errorf(codes.PermissionDenied, "subscriber %s may not manage consumer groups (scope admin)", p.Name)
	}
	return WithPrincipal(ctx, p), nil
}

// authorizeCallback: a callback posted over gRPC goes into the log like one posted over HTTP, so it
// passes the same checks: a subscriber token with the post scope, or the vendor's credentials.
// Only a bridge with neither the vendor's callers nor any token configured takes it from anyone.
func (r *Rules) authorizeCallback(ctx context.Context, vendorConfigured bool, vendor func(context.Context) *Refusal) (context.Context, error) {
	p, err := r.caller(ctx)
	if err != nil {
		return nil, err
	}
	if p != nil {
		if !p.post {
			return nil, status.Errorf(codes.PermissionDenied, "subscriber %s may not post callbacks (scope post)", p.Name)
		}
		return WithPrincipal(ctx, p), nil
	}
	if !vendorConfigured && !r.SubscribersConfigured() {
		return ctx, nil
	}
	if vendorConfigured {
		ref := vendor(ctx)
		if ref == nil {
			return ctx, nil
		}
		code := codes.Unauthenticated
		if ref.Status == 403 {
			code = codes.PermissionDenied
		}
		return nil, status.Error(code, ref.Msg)
	}
	return nil, status.Error(codes.Unauthenticated, "callbacks over gRPC need a token with the post scope (metadata authorization: Bearer <token>)")
}

// openimOverGRPC applies OpenIM's HTTP checks to a gRPC call: its Basic credentials in the
// authorization metadata, from an allowed address. A path secret cannot travel over gRPC: where one
// is configured, posting OpenIM callbacks over gRPC takes a token.
func (r *Rules) openimOverGRPC(ctx context.Context) *Refusal {
	if r.openim.pathSecret != nil {
		return &Refusal{401, "OpenIM callbacks over gRPC need a token with the post scope (a path secret is configured)"}
	}
	if !allowedAddr(r.openim.allowed, peerAddr(ctx)) {
		return &Refusal{403, "OpenIM callbacks are not taken from " + hostOf(peerAddr(ctx))}
	}
	if r.openim.basicPass != nil {
		return r.checkBasic(first(ctx, "authorization"))
	}
	return nil
}

// tencentOverGRPC applies Tencent's checks to a gRPC call, its query parameters sent as metadata
// (sdkappid, requesttime, sign).
func (r *Rules) tencentOverGRPC(ctx context.Context) *Refusal {
	if first(ctx, "sdkappid") == "" {
		return &Refusal{401, "Tencent callbacks over gRPC need a token with the post scope, or Tencent's sdkappid, requesttime and sign as metadata"}
	}
	q := url.Values{"SdkAppid": {first(ctx, "sdkappid")}, "RequestTime": {first(ctx, "requesttime")}, "Sign": {first(ctx, "sign")}}
	return r.CheckTencent(peerAddr(ctx), q, time.Now())
}

// caller returns the subscriber the call comes from: by its bearer token, else by its verified
// client certificate; nil for neither. Unauthenticated for a token or a certificate no subscriber
// has.
func (r *Rules) caller(ctx context.Context) (*Principal, error) {
	if token, ok := strings.CutPrefix(first(ctx, "authorization"), "Bearer "); ok {
		p := r.tokens[sha256.Sum256([]byte(strings.TrimSpace(token)))]
		if p == nil {
			return nil, status.Error(codes.Unauthenticated, "unknown token")
		}
		return p, nil
	}
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil, nil
	}
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil, nil
	}
	cn := ti.State.VerifiedChains[0][0].Subject.CommonName
	p := r.certs[cn]
	if p == nil {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate %q is no subscriber's", cn)
	}
	return p, nil
}

func first(ctx context.Context, key string) string {
	if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
