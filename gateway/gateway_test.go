package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/openim/cmd":     "/openim/cmd",
		"/openim//cmd":    "/openim/cmd",
		"//openim///cmd/": "/openim/cmd/",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q; want %q", in, got, want)
		}
	}
}

// degraded is a readiness error every instance shares (eventlog.LogElecting).
type degraded struct{}

func (degraded) Error() string  { return "event log cluster not answering" }
func (degraded) Degraded() bool { return true }

// TestReadyz: /readyz answers 503 when this instance cannot take callbacks, and 200 "degraded" when
// the fault is one every instance shares (a load balancer draining them all would not help).
func TestReadyz(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		want   string
	}{
		{nil, http.StatusOK, `{"status":"ready"}`},
		{errors.New("nats: CLOSED"), http.StatusServiceUnavailable, `{"status":"unavailable","error":"nats: CLOSED"}`},
		{fmt.Errorf("ready: %w", degraded{}), http.StatusOK, `{"status":"degraded","error":"ready: event log cluster not answering"}`},
	} {
		h := &Handler{opts: Options{Ready: func(context.Context) error { return tc.err }}}
		w := httptest.NewRecorder()
		h.readyz(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if w.Code != tc.status || strings.TrimSpace(w.Body.String()) != tc.want {
			t.Errorf("ready %v: %d %s; want %d %s", tc.err, w.Code, w.Body, tc.status, tc.want)
		}
	}
}
