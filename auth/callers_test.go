package auth

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func mustRules(t testing.TB, c Config) *Rules {
	t.Helper()
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// TestTencentSign uses Tencent's published example: token xxxxyyyy, RequestTime 1669872112.
func TestTencentSign(t *testing.T) {
	t.Parallel()
	const sign = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
	r := mustRules(t, Config{Callers: Callers{Tencent: TencentCaller{Apps: []TencentApp{
		{SdkAppID: "1400000000", Token: "xxxxyyyy"}, {SdkAppID: "1400000001"},
	}}}})
	at := time.Unix(1669872112, 0)
	tests := []struct {
		name   string
		query  string
		now    time.Time
		status int
	}{
		{"valid", "SdkAppid=1400000000&RequestTime=1669872112&Sign=" + sign, at.Add(30 * time.Second), 0},
		{"other app", "SdkAppid=1&RequestTime=1669872112&Sign=" + sign, at, http.StatusForbidden},
		{"second app, unsigned", "SdkAppid=1400000001", at, 0},
		{"bad sign", "SdkAppid=1400000000&RequestTime=1669872112&Sign=" + sign[:63] + "0", at, http.StatusUnauthorized},
		{"another app's sign", "SdkAppid=1400000000&RequestTime=1669872112&Sign=" + HashSecret("other1669872112"), at, http.StatusUnauthorized},
		{"replayed", "SdkAppid=1400000000&RequestTime=1669872112&Sign=" + sign, at.Add(61 * time.Second), http.StatusUnauthorized},
		{"from the future", "SdkAppid=1400000000&RequestTime=1669872112&Sign=" + sign, at.Add(-61 * time.Second), http.StatusUnauthorized},
		{"no time", "SdkAppid=1400000000&Sign=" + sign, at, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		ref := r.CheckTencent("203.0.113.5:443", q, tt.now)
		if got := statusOf(ref); got != tt.status {
			t.Errorf("%s: status %d (%v); want %d", tt.name, got, ref, tt.status)
		}
	}
}

func statusOf(ref *Refusal) int {
	if ref == nil {
		return 0
	}
	return ref.Status
}

func TestCheckOpenIM(t *testing.T) {
	t.Parallel()
	r := mustRules(t, Config{Callers: Callers{OpenIM: OpenIMCaller{
		BasicUser: "imbridge", BasicPasswordSHA256: HashSecret("s3cret"),
		PathSecretSHA256: HashSecret("p4th"),
		AllowCIDRs:       []string{"10.0.0.0/8", "192.0.2.7"},
	}}})
	tests := []struct {
		name, remote, auth, rest string
		status                   int
		command                  string
	}{
		{"right", "10.1.2.3:5000", basic("imbridge", "s3cret"), "p4th/callbackAfterQuitGroupCommand", 0, "callbackAfterQuitGroupCommand"},
		{"single address", "192.0.2.7:5000", basic("imbridge", "s3cret"), "p4th/cmd", 0, "cmd"},
		{"IPv4 in IPv6", "[::ffff:10.0.0.1]:5000", basic("imbridge", "s3cret"), "p4th/cmd", 0, "cmd"},
		{"other network", "192.0.2.8:5000", basic("imbridge", "s3cret"), "p4th/cmd", http.StatusForbidden, ""},
		{"no path secret", "10.1.2.3:5000", basic("imbridge", "s3cret"), "cmd", http.StatusUnauthorized, ""},
		{"wrong path secret", "10.1.2.3:5000", basic("imbridge", "s3cret"), "p4tH/cmd", http.StatusUnauthorized, ""},
		{"no credentials", "10.1.2.3:5000", "", "p4th/cmd", http.StatusUnauthorized, ""},
		{"wrong password", "10.1.2.3:5000", basic("imbridge", "s3cre"), "p4th/cmd", http.StatusUnauthorized, ""},
		{"wrong user", "10.1.2.3:5000", basic("admin", "s3cret"), "p4th/cmd", http.StatusUnauthorized, ""},
		{"bearer, not basic", "10.1.2.3:5000", "Bearer s3cret", "p4th/cmd", http.StatusUnauthorized, ""},
		{"bad base64", "10.1.2.3:5000", "Basic !!!", "p4th/cmd", http.StatusUnauthorized, ""},
	}
	for _, tt := range tests {
		cmd, ref := r.CheckOpenIM(tt.remote, http.Header{"Authorization": {tt.auth}}, tt.rest)
		if statusOf(ref) != tt.status || cmd != tt.command {
			t.Errorf("%s: %q, %v; want %q, status %d", tt.name, cmd, ref, tt.command, tt.status)
		}
		if ref != nil && (strings.Contains(ref.Msg, "s3cret") || strings.Contains(ref.Msg, "p4th")) {
			t.Errorf("%s: refusal %q names a secret", tt.name, ref.Msg)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		c    Config
	}{
		{"basic without password", Config{Callers: Callers{OpenIM: OpenIMCaller{BasicUser: "u"}}}},
		{"password not a hash", Config{Callers: Callers{OpenIM: OpenIMCaller{BasicUser: "u", BasicPasswordSHA256: "s3cret"}}}},
		{"bad CIDR", Config{Callers: Callers{OpenIM: OpenIMCaller{AllowCIDRs: []string{"10.0.0.0/33"}}}}},
		{"app without id", Config{Callers: Callers{Tencent: TencentCaller{Apps: []TencentApp{{Token: "t"}}}}}},
		{"app twice", Config{Callers: Callers{Tencent: TencentCaller{Apps: []TencentApp{{SdkAppID: "1"}, {SdkAppID: "1"}}}}}},
		{"subscriber without name", Config{Subscribers: []Subscriber{{TokenSHA256: HashSecret("t")}}}},
		{"token not a hash", Config{Subscribers: []Subscriber{{Name: "a", TokenSHA256: "t"}}}},
		{"same token twice", Config{Subscribers: []Subscriber{{Name: "a", TokenSHA256: HashSecret("t")}, {Name: "b", TokenSHA256: HashSecret("t")}}}},
		{"unknown kind", Config{Subscribers: []Subscriber{{Name: "a", TokenSHA256: HashSecret("t"), Scopes: Scopes{Kinds: []string{"messages"}}}}}},
	} {
		if _, err := New(tt.c); err == nil {
			t.Errorf("%s: nil error", tt.name)
		}
	}
}

// FuzzCallers: whatever an IM server's request carries, the checks do not panic, and only the right
// credentials pass.
func FuzzCallers(f *testing.F) {
	r := mustRules(f, Config{Callers: Callers{
		OpenIM:  OpenIMCaller{BasicUser: "imbridge", BasicPasswordSHA256: HashSecret("s3cret"), PathSecretSHA256: HashSecret("p4th")},
		Tencent: TencentCaller{Apps: []TencentApp{{SdkAppID: "1400000000", Token: "xxxxyyyy"}}},
	}})
	f.Add(basic("imbridge", "s3cret"), "p4th/cmd", "SdkAppid=1400000000&RequestTime=1669872112&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061")
	f.Add("Basic", "/", "SdkAppid=%zz")
	f.Fuzz(func(t *testing.T, authorization, rest, query string) {
		cmd, ref := r.CheckOpenIM("10.0.0.1:1", http.Header{"Authorization": {authorization}}, rest)
		if ref == nil && (authorization != basic("imbridge", "s3cret") && !basicEquals(authorization) || !strings.HasPrefix(rest, "p4th/")) {
			t.Fatalf("OpenIM request with %q, %q passed as %q", authorization, rest, cmd)
		}
		q, _ := url.ParseQuery(query)
		if r.CheckTencent("10.0.0.1:1", q, time.Unix(1669872112, 0)) == nil && q.Get("Sign") != "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061" {
			t.Fatalf("Tencent query %q passed", query)
		}
	})
}

// basicEquals: other spellings of the right credentials (base64 padding, scheme case) that
// net/http accepts as well.
func basicEquals(authorization string) bool {
	u, p, ok := parseBasic(authorization)
	return ok && u == "imbridge" && p == "s3cret"
}

// BenchmarkCheckOpenIM: what authentication adds to an OpenIM callback with Basic credentials and a
// path secret (compare with the whole callback path, e2e's BenchmarkAfterCallback).
func BenchmarkCheckOpenIM(b *testing.B) {
	r := mustRules(b, Config{Callers: Callers{OpenIM: OpenIMCaller{
		BasicUser: "imbridge", BasicPasswordSHA256: HashSecret("s3cret"), PathSecretSHA256: HashSecret("p4th"),
	}}})
	h := http.Header{"Authorization": {basic("imbridge", "s3cret")}}
	b.ReportAllocs()
	for b.Loop() {
		if _, ref := r.CheckOpenIM("10.0.0.1:1", h, "p4th/callbackAfterQuitGroupCommand"); ref != nil {
			b.Fatal(ref)
		}
	}
}
