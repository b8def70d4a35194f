package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	"google.golang.org/grpc/metadata"

	"github.com/imbridge/imbridge/auth"
)

// benchAuth is what --auth turns on: the bridge asks OpenIM for Basic credentials and a path
// secret, and every subscriber for a token, as a guarded deployment does. nil: an open bridge.
type benchAuth struct {
	configFile string // the bridge's --config
	basic      string // OpenIM's Authorization header
	pathSecret string
	token      string // every subscriber's
}

// newBenchAuth writes the bridge's configuration into dir.
func newBenchAuth(dir string) (*benchAuth, error) {
	a := &benchAuth{pathSecret: "bench-path-secret", token: "imb_bench-subscriber-token"}
	a.basic = "Basic " + base64.StdEncoding.EncodeToString([]byte("imbridge:bench-password"))
	conf := fmt.Sprintf(`callers:
  openim:
    basic_user: imbridge
    basic_password_sha256: %s
    path_secret_sha256: %s
subscribers:
  - {name: bench, token_sha256: %s, scopes: {groups: ["*"], decide: true, tail: true}}
`, auth.HashSecret("bench-password"), auth.HashSecret(a.pathSecret), auth.HashSecret(a.token))
	a.configFile = filepath.Join(dir, "auth.yaml")
	return a, os.WriteFile(a.configFile, []byte(conf), 0o600)
}

// bridgeArgs are the serve flags for it.
func (a *benchAuth) bridgeArgs() []string {
	if a == nil {
		return nil
	}
	return []string{"--config", a.configFile}
}

// openimPath is where OpenIM posts a command.
func (a *benchAuth) openimPath(command string) string {
	if a == nil {
		return "/openim/" + command
	}
	return "/openim/" + a.pathSecret + "/" + command
}

// openimHeader is OpenIM's request header.
func (a *benchAuth) openimHeader() map[string]string {
	if a == nil {
		return openimHeader
	}
	h := maps.Clone(openimHeader)
	h["Authorization"] = a.basic
	return h
}

// subscriberContext carries the subscriber's token.
func (a *benchAuth) subscriberContext(ctx context.Context) context.Context {
	if a == nil {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.token)
}
