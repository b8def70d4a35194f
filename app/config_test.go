package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imbridge.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFile(t *testing.T) {
	t.Parallel()
	f, err := LoadFile(writeConfig(t, `
default: {deadline: 800ms}
commands:
  callbackBeforeSetGroupInfoExCommand: {deadline: 3s, failure_policy: refuse}
callers:
  openim:
    basic_user: imbridge
    basic_password_sha256: 0b14d501a594442a01c6859541bcb3e8164d183d32937b851835442f69d5c94e
    allow_cidrs: [10.0.0.0/8]
  tencent:
    apps:
      - {sdkappid: "1400000000", token: xxxxyyyy}
subscribers:
  - name: moderation
    token_sha256: 0b14d501a594442a01c6859541bcb3e8164d183d32937b851835442f69d5c94e
    scopes: {groups: [moderation], decide: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Auth.Callers.OpenIM.BasicUser != "imbridge" || len(f.Auth.Subscribers) != 1 || !f.Auth.Subscribers[0].Scopes.Decide || len(f.Commands) != 1 {
		t.Errorf("loaded %+v", f)
	}
}

func TestLoadFileErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, yaml, want string }{
		{"typo", "defualt: {deadline: 1s}", "defualt"},
		{"typo in a scope", "subscribers: [{name: a, token_sha256: 0b14d501a594442a01c6859541bcb3e8164d183d32937b851835442f69d5c94e, scopes: {decides: true}}]", "decides"},
		{"bad duration", "default: {deadline: soon}", "soon"},
		{"too long", "default: {deadline: 20s}", "at most"},
		{"zero", "commands: {x: {deadline: 0s}}", "more than 0"},
		{"bad policy", "default: {failure_policy: maybe}", "maybe"},
		{"plain token", "subscribers: [{name: a, token_sha256: imb_abc}]", "SHA-256"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadFile(writeConfig(t, tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v; want one mentioning %q", err, tt.want)
			}
		})
	}
	if _, err := LoadFile(writeConfig(t, "")); err != nil {
		t.Errorf("empty file: %v; want defaults", err)
	}
}
