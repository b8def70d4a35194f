package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imbridge/imbridge/examples"
	"github.com/imbridge/imbridge/internal/bridgetest"
	"github.com/imbridge/imbridge/server"
)

// TestPublishBudget: while the log takes no write (here its stream is gone: each publish finds no
// responder and is retried), a callback waits at most its publish budget, or a before-callback its
// deadline when that is shorter, and gets the vendor's 503 saying the write was not acknowledged,
// before its IM server gives up.
func TestPublishBudget(t *testing.T) {
	t.Parallel()
	const budget = 300 * time.Millisecond
	b := bridgetest.Start(t, bridgetest.Options{
		PublishTimeout: budget,
		Policies:       &server.Policies{Default: server.CommandPolicy{Deadline: dur(150 * time.Millisecond)}},
	})
	if err := b.Log.JetStream().DeleteStream(t.Context(), b.Log.Stream()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		body []byte
		wait time.Duration // the shorter of the budget and the deadline
	}{
		{"/openim/callbackAfterQuitGroupCommand", examples.Must("openim-after-quit-group").Body, budget},
		{beforeEx, examples.Must("openim-before-set-group-info-ex").Body, 150 * time.Millisecond},
	} {
		start := time.Now()
		status, out := b.Post(t, http.MethodPost, tc.path, nil, tc.body)
		took := time.Since(start)
		if status != http.StatusServiceUnavailable || !strings.HasPrefix(string(out), `{"actionCode":1,"errCode":503,"errMsg":"event log did not acknowledge the callback in time`) {
			t.Errorf("%s: %d %s; want OpenIM's 503 naming the timeout", tc.path, status, out)
		}
		// Not sooner (the publish was retried), and well before OpenIM's 5 s (Tencent's 2 s).
		if took < tc.wait || took > 4*time.Second {
			t.Errorf("%s: answered after %v; want %v and a little", tc.path, took, tc.wait)
		}
	}
}
