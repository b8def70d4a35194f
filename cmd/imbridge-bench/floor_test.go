package main

import (
	"context"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestFloorRoundTrip: the floor answers each before-callback with its decider's verdict, and
// without a decider it answers 503 rather than waiting.
func TestFloorRoundTrip(t *testing.T) {
	f := newFloorServer()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	res, err := load(context.Background(), addr, beforeRequests(addr, nil), 1, 0, time.Hour, 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 3 || !strings.Contains(res.FirstErr, "503") {
		t.Errorf("without a decider: %d errors (%q); want 3 (503)", res.Errors, res.FirstErr)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := f.grpcServer()
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	sub, err := subscribe(lis.Addr().String(), nil, verdictDecider, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.close)

	res, err = load(context.Background(), addr, beforeRequests(addr, nil), 4, 0, time.Hour, 200)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 200 || res.Errors != 0 {
		t.Errorf("with a decider: %d answered, %d errors (%q); want 200 and 0", res.Requests, res.Errors, res.FirstErr)
	}
	f.mu.Lock()
	left := len(f.waiting)
	f.mu.Unlock()
	if left != 0 {
		t.Errorf("%d callbacks still waiting after all were answered", left)
	}
}
