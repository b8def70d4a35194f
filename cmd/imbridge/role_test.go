package main

import (
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/imbridge/imbridge/internal/bridgetest"
)

// TestServeRoles: --role needs an event log other instances can reach, and gRPC health says, per
// service, what an instance of each role serves (for a load balancer's checks).
func TestServeRoles(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(bridgetest.Binary(t), "serve", "--role", "ingest", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--role ingest needs --nats-url") {
		t.Errorf("--role ingest on the embedded log: %v\n%s; want an error saying it needs --nats-url", err, out)
	}
	out, err = exec.Command(bridgetest.Binary(t), "serve", "--role", "both", "--nats-url", "nats://127.0.0.1:1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `role "both"`) {
		t.Errorf("--role both: %v\n%s; want an error naming it", err, out)
	}

	url := bridgetest.ExternalNATS(t)
	for _, tc := range []struct {
		role    string
		serving map[string]bool
	}{
		{"all", map[string]bool{"": true, "imbridge.v1.OpenIMCallbackService": true, "imbridge.v1.TencentCallbackService": true, "imbridge.v1.EventService": true, "imbridge.v1.AdminService": true}},
		{"ingest", map[string]bool{"": true, "imbridge.v1.OpenIMCallbackService": true, "imbridge.v1.TencentCallbackService": true, "imbridge.v1.EventService": false, "imbridge.v1.AdminService": true}},
		{"deliver", map[string]bool{"": true, "imbridge.v1.OpenIMCallbackService": false, "imbridge.v1.TencentCallbackService": false, "imbridge.v1.EventService": true, "imbridge.v1.AdminService": true}},
	} {
		p := startServe(t, t.TempDir(), "--nats-url", url, "--role", tc.role)
		conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for svc, serving := range tc.serving {
			hc, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
			want := healthpb.HealthCheckResponse_NOT_SERVING
			if serving {
				want = healthpb.HealthCheckResponse_SERVING
			}
			if err != nil || hc.GetStatus() != want {
				t.Errorf("--role %s: health of %q: %v, %v; want %v", tc.role, svc, hc, err, want)
			}
		}
	}
}
