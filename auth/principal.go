package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Principal is an authenticated subscriber and what its token allows.
type Principal struct {
	// Name of the subscriber in the configuration.
	Name string

	sources  []pb.Source
	kinds    []pb.EventKind
	commands []string
	groupIDs []string
	groups   []string
	anyGroup bool
	tail     bool
	decide   bool
	post     bool
	admin    bool
}

func newPrincipal(s Subscriber) (*Principal, error) {
	sc := s.Scopes
	p := &Principal{Name: s.Name, commands: sc.Commands, groupIDs: sc.GroupIDs, tail: sc.Tail, decide: sc.Decide, post: sc.Post, admin: sc.Admin}
	for _, v := range sc.Sources {
		src, ok := pb.Source_value["SOURCE_"+strings.ToUpper(v)]
		if !ok || src == 0 {
			return nil, fmt.Errorf("sources: %q is not openim or tencent", v)
		}
		p.sources = append(p.sources, pb.Source(src))
	}
	for _, v := range sc.Kinds {
		k, ok := pb.EventKind_value["EVENT_KIND_"+strings.ToUpper(v)]
		if !ok || k == 0 {
			return nil, fmt.Errorf("kinds: %q is not raw, group_info_changed or member_quit", v)
		}
		p.kinds = append(p.kinds, pb.EventKind(k))
	}
	for _, g := range sc.Groups {
		if g == "*" {
			p.anyGroup = true
		} else {
			p.groups = append(p.groups, g)
		}
	}
	return p, nil
}

// MayManageGroups reports whether the subscriber has the admin scope: it may replace a consumer
// group's settings (and, later, manage groups).
func (p *Principal) MayManageGroups() bool { return p.admin }

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext is the subscriber the interceptors authenticated; nil when the bridge asks for no
// tokens (everything is allowed).
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// AllowGroupAdmin checks that ctx's subscriber may manage consumer group name: the admin scope and
// the group among its groups. Without a subscriber (no tokens configured), everything is allowed.
func AllowGroupAdmin(ctx context.Context, name string) error {
	p := FromContext(ctx)
	switch {
	case p == nil:
		return nil
	case !p.admin:
		return status.Errorf(codes.PermissionDenied, "subscriber %s may not manage consumer groups (scope admin)", p.Name)
	case !p.anyGroup && !slices.Contains(p.groups, name):
		return status.Errorf(codes.PermissionDenied, "subscriber %s may not manage consumer group %s (scope groups: %v)", p.Name, name, p.groups)
	}
	return nil
}

// AllowSubscription checks a subscription against the scopes of ctx's subscriber:
// PermissionDenied naming what the token does not allow. Without a subscriber (no tokens
// configured), everything is allowed.
func AllowSubscription(ctx context.Context, sub *pb.Subscription) error {
	p := FromContext(ctx)
	if p == nil {
		return nil
	}
	deny := func(format string, a ...any) error {
		return status.Errorf(codes.PermissionDenied, "subscriber %s: "+format, append([]any{p.Name}, a...)...)
	}
	switch {
	case sub.GetGroup() == "" && !p.tail:
		return deny("may not open live tails (scope tail)")
	case sub.GetGroup() != "" && !p.anyGroup && !slices.Contains(p.groups, sub.GetGroup()):
		return deny("may not join consumer group %s (scope groups: %v)", sub.GetGroup(), p.groups)
	case sub.GetDecide() && !p.decide:
		return deny("may not decide (scope decide)")
	}
	f := sub.GetFilter()
	if err := within("sources", f.GetSources(), p.sources); err != "" {
		return deny("%s", err)
	}
	if err := within("kinds", f.GetKinds(), p.kinds); err != "" {
		return deny("%s", err)
	}
	if err := within("commands", f.GetCommands(), p.commands); err != "" {
		return deny("%s", err)
	}
	if err := within("group_ids", f.GetGroupIds(), p.groupIDs); err != "" {
		return deny("%s", err)
	}
	return nil
}

// within says what is wrong when a filter list asks for more than the scope allows: with a scope
// limit, the filter must name only values within it (an empty filter list asks for everything).
func within[T comparable](name string, asked, allowed []T) string {
	if len(allowed) == 0 {
		return ""
	}
	if len(asked) == 0 {
		return fmt.Sprintf("filter.%s is empty, which asks for all; this token may receive %v only", name, allowed)
	}
	for _, a := range asked {
		if !slices.Contains(allowed, a) {
			return fmt.Sprintf("filter.%s: %v is not within this token's %v", name, a, allowed)
		}
	}
	return ""
}
