// Package auth decides who may call imbridge and what each caller may do. IM servers post callbacks:
// OpenIM with HTTP Basic credentials from its webhook url, a secret path segment or from an allowed
// network; Tencent with the Sign of one of its apps. Internal services subscribe with bearer tokens
// whose scopes say which events they may receive, which consumer groups they may join, whether they
// may decide, and whether they may post callbacks over gRPC.
//
// It owns the rules and the credentials: the gateway asks it about each HTTP callback (and writes the
// refusal in the vendor's format), and its gRPC interceptors put the caller's Principal in the
// context, where the services read what the caller may do. Nothing else parses credentials. Secrets
// are never logged and never stored: subscriber tokens and OpenIM's password are kept as SHA-256.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Config is the auth part of the bridge's YAML file (--config). The zero Config configures nothing:
// every door is open, as on a developer's laptop.
type Config struct {
	// Callers are the IM servers.
	Callers Callers `yaml:"callers"`
	// Subscribers are the internal services, each with a token.
	Subscribers []Subscriber `yaml:"subscribers"`
}

// Callers says how each IM server proves who it is.
type Callers struct {
	OpenIM  OpenIMCaller  `yaml:"openim"`
	Tencent TencentCaller `yaml:"tencent"`
}

// OpenIMCaller: OpenIM sends no signature, but its webhook url can carry credentials. Any of the
// means set must pass (a request needs the Basic credentials and the path secret and an allowed
// address when all three are set).
type OpenIMCaller struct {
	// BasicUser and BasicPasswordSHA256 (hex): OpenIM's Go HTTP client turns the url's
	// "http://user:password@host:8080/openim" into HTTP Basic auth.
	BasicUser           string `yaml:"basic_user"`
	BasicPasswordSHA256 string `yaml:"basic_password_sha256"`
	// PathSecretSHA256 (hex): a secret path segment, "http://host:8080/openim/<secret>", makes OpenIM
	// post to /openim/<secret>/{command}.
	PathSecretSHA256 string `yaml:"path_secret_sha256"`
	// AllowCIDRs: the networks OpenIM posts from (the TCP peer's address; no proxy headers are read).
	AllowCIDRs []string `yaml:"allow_cidrs"`
}

// TencentCaller: Tencent signs each callback with its app's token: Sign = hex(SHA-256(token +
// RequestTime)). The token itself is needed to check it, so it is in the file as it is (or in
// --tencent-token): keep the file readable by the bridge only.
type TencentCaller struct {
	// Apps the bridge takes callbacks for. A callback for another SdkAppid is refused.
	Apps []TencentApp `yaml:"apps"`
	// AllowCIDRs: the networks Tencent posts from, if known.
	AllowCIDRs []string `yaml:"allow_cidrs"`
}

// TencentApp is one Tencent IM application.
type TencentApp struct {
	SdkAppID string `yaml:"sdkappid"`
	// Token is the app's callback authentication token; empty: its callbacks are not signed (only the
	// SdkAppid is checked).
	Token string `yaml:"token"`
}

// Subscriber is one internal service's token and what it may do.
type Subscriber struct {
	// Name identifies the subscriber in logs and errors.
	Name string `yaml:"name"`
	// TokenSHA256 is the hex SHA-256 of its bearer token (`imbridge token new` prints both).
	TokenSHA256 string `yaml:"token_sha256,omitempty"`
	// CertCN: the subscriber may instead present a client certificate (mTLS, --client-ca) whose
	// subject common name is this.
	CertCN string `yaml:"cert_cn,omitempty"`
	// Scopes: what it may do.
	Scopes Scopes `yaml:"scopes"`
}

// Scopes say what a subscriber may do. Empty lists in the receive limits mean "any".
type Scopes struct {
	// Receive limits the events it may receive: each non-empty list bounds the subscription's filter.
	Sources  []string `yaml:"sources,omitempty"`   // openim, tencent
	Kinds    []string `yaml:"kinds,omitempty"`     // raw, group_info_changed, member_quit
	Commands []string `yaml:"commands,omitempty"`  // vendor command names
	GroupIDs []string `yaml:"group_ids,omitempty"` // IM group ids
	// Groups are the consumer groups it may join: names, or "*" for any.
	Groups []string `yaml:"groups,omitempty"`
	// Tail: it may open live tails (no group).
	Tail bool `yaml:"tail,omitempty"`
	// Decide: it may join groups as a decider.
	Decide bool `yaml:"decide,omitempty"`
	// Post: it may post callbacks over gRPC (the callback RPCs).
	Post bool `yaml:"post,omitempty"`
	// Admin: it may manage consumer groups (admin RPCs).
	Admin bool `yaml:"admin,omitempty"`
}

// Rules are a Config checked and ready: what the interceptors and the gateway ask.
type Rules struct {
	openim  openimRules
	tencent tencentRules
	tokens  map[[sha256.Size]byte]*Principal // by the token's SHA-256
	certs   map[string]*Principal            // by client certificate common name
}

type openimRules struct {
	basicUser  string
	basicPass  []byte // SHA-256; nil: no Basic auth
	pathSecret []byte // SHA-256; nil: no path secret
	allowed    []netip.Prefix
	configured bool
}

type tencentRules struct {
	apps       map[string]string // SdkAppid -> token ("" unsigned)
	allowed    []netip.Prefix
	configured bool
}

// New checks c and returns its rules.
func New(c Config) (*Rules, error) {
	r := &Rules{tokens: map[[sha256.Size]byte]*Principal{}, certs: map[string]*Principal{}}
	o := c.Callers.OpenIM
	var err error
	if o.BasicUser != "" || o.BasicPasswordSHA256 != "" {
		if o.BasicUser == "" || o.BasicPasswordSHA256 == "" {
			return nil, errors.New("callers.openim: basic_user and basic_password_sha256 go together")
		}
		if strings.Contains(o.BasicUser, ":") {
			return nil, errors.New("callers.openim.basic_user: a user name in Basic auth cannot hold ':'")
		}
		if r.openim.basicPass, err = sha256Hex(o.BasicPasswordSHA256); err != nil {
			return nil, fmt.Errorf("callers.openim.basic_password_sha256: %w", err)
		}
		r.openim.basicUser = o.BasicUser
	}
	if o.PathSecretSHA256 != "" {
		if r.openim.pathSecret, err = sha256Hex(o.PathSecretSHA256); err != nil {
			return nil, fmt.Errorf("callers.openim.path_secret_sha256: %w", err)
		}
	}
	if r.openim.allowed, err = prefixes(o.AllowCIDRs); err != nil {
		return nil, fmt.Errorf("callers.openim.allow_cidrs: %w", err)
	}
	r.openim.configured = r.openim.basicPass != nil || r.openim.pathSecret != nil || len(r.openim.allowed) > 0

	t := c.Callers.Tencent
	if len(t.Apps) > 0 {
		r.tencent.apps = map[string]string{}
	}
	for i, app := range t.Apps {
		if app.SdkAppID == "" {
			return nil, fmt.Errorf("callers.tencent.apps[%d]: sdkappid is required", i)
		}
		if _, dup := r.tencent.apps[app.SdkAppID]; dup {
			return nil, fmt.Errorf("callers.tencent.apps[%d]: sdkappid %s twice", i, app.SdkAppID)
		}
		r.tencent.apps[app.SdkAppID] = app.Token
	}
	if r.tencent.allowed, err = prefixes(t.AllowCIDRs); err != nil {
		return nil, fmt.Errorf("callers.tencent.allow_cidrs: %w", err)
	}
	r.tencent.configured = len(r.tencent.apps) > 0 || len(r.tencent.allowed) > 0

	names := map[string]bool{}
	for i, s := range c.Subscribers {
		if s.Name == "" {
			return nil, fmt.Errorf("subscribers[%d]: name is required", i)
		}
		if names[s.Name] {
			return nil, fmt.Errorf("subscribers[%d]: name %s twice", i, s.Name)
		}
		names[s.Name] = true
		p, err := newPrincipal(s)
		if err != nil {
			return nil, fmt.Errorf("subscribers[%d] (%s).scopes: %w", i, s.Name, err)
		}
		if s.TokenSHA256 == "" && s.CertCN == "" {
			return nil, fmt.Errorf("subscribers[%d] (%s): token_sha256 or cert_cn is required", i, s.Name)
		}
		if s.TokenSHA256 != "" {
			sum, err := sha256Hex(s.TokenSHA256)
			if err != nil {
				return nil, fmt.Errorf("subscribers[%d] (%s).token_sha256: %w", i, s.Name, err)
			}
			key := [sha256.Size]byte(sum)
			if r.tokens[key] != nil {
				return nil, fmt.Errorf("subscribers[%d] (%s): same token as %s", i, s.Name, r.tokens[key].Name)
			}
			r.tokens[key] = p
		}
		if s.CertCN != "" {
			if r.certs[s.CertCN] != nil {
				return nil, fmt.Errorf("subscribers[%d] (%s): cert_cn %s is %s's", i, s.Name, s.CertCN, r.certs[s.CertCN].Name)
			}
			r.certs[s.CertCN] = p
		}
	}
	return r, nil
}

// Open lists what these rules leave unauthenticated, for the startup warning; empty when every
// door is guarded.
func (r *Rules) Open() []string {
	var open []string
	if !r.openim.configured {
		open = append(open, "OpenIM callbacks (HTTP): anyone who reaches the HTTP port")
	}
	if !r.tencent.configured {
		open = append(open, "Tencent callbacks (HTTP): anyone who reaches the HTTP port")
	}
	for _, app := range slices.Sorted(maps.Keys(r.tencent.apps)) {
		if r.tencent.apps[app] == "" {
			open = append(open, "Tencent app "+app+" (no token: its callbacks are not signed, and SdkAppids are not secret)")
		}
	}
	if !r.SubscribersConfigured() {
		open = append(open, "gRPC (subscribe, decide, post callbacks, manage and delete consumer groups): anyone who reaches the gRPC port")
	}
	return open
}

// Summary says which checks are on, for the startup line: slog key-value pairs, no secret.
func (r *Rules) Summary() []any {
	var openim []string
	if r.openim.basicPass != nil {
		openim = append(openim, "basic")
	}
	if r.openim.pathSecret != nil {
		openim = append(openim, "path_secret")
	}
	if len(r.openim.allowed) > 0 {
		openim = append(openim, fmt.Sprintf("%d cidrs", len(r.openim.allowed)))
	}
	signed := 0
	for _, token := range r.tencent.apps {
		if token != "" {
			signed++
		}
	}
	tencent := []string{fmt.Sprintf("%d apps (%d signed)", len(r.tencent.apps), signed)}
	if len(r.tencent.allowed) > 0 {
		tencent = append(tencent, fmt.Sprintf("%d cidrs", len(r.tencent.allowed)))
	}
	if !r.tencent.configured {
		tencent = nil
	}
	return []any{
		"openim", orOpen(openim), "tencent", orOpen(tencent),
		"subscriber_tokens", len(r.tokens), "subscriber_certs", len(r.certs),
	}
}

func orOpen(checks []string) string {
	if len(checks) == 0 {
		return "open"
	}
	return strings.Join(checks, ", ")
}

// SubscribersConfigured reports whether the gRPC port asks subscribers who they are.
func (r *Rules) SubscribersConfigured() bool { return len(r.tokens) > 0 || len(r.certs) > 0 }

// CertSubscribers reports whether some subscriber authenticates with a client certificate.
func (r *Rules) CertSubscribers() bool { return len(r.certs) > 0 }

func sha256Hex(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("want 64 hex digits (a SHA-256)")
	}
	return b, nil
}

func prefixes(cidrs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(c))
			if aerr != nil {
				return nil, fmt.Errorf("%q: want a CIDR (10.0.0.0/8) or an address", c)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// allowedAddr reports whether the peer address "host:port" is in one of the prefixes (any, when
// there are none).
func allowedAddr(prefixes []netip.Prefix, remote string) bool {
	if len(prefixes) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	return slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) })
}

// equalSHA256 compares secret's SHA-256 with sum in constant time.
func equalSHA256(secret string, sum []byte) bool {
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(got[:], sum) == 1
}
