package client_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: a service that imports the client gets gRPC and protobuf, not the bridge's
// HTTP gateway, event log or server (the gateway's generated code lives in a package of its own).
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/imbridge/imbridge/client").Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go list: %v: %s", err, exit.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, unwanted := range []string{"github.com/grpc-ecosystem/grpc-gateway", "github.com/nats-io/", "github.com/imbridge/imbridge/server", "github.com/imbridge/imbridge/gateway", "github.com/imbridge/imbridge/gen/gateway"} {
			if strings.HasPrefix(dep, unwanted) {
				t.Errorf("the client depends on %s", dep)
			}
		}
	}
}
