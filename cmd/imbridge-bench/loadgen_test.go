package main

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// server answers 200, or 500 to requests whose path says so, and counts what it served.
func testServer(t *testing.T) (addr string, served *atomic.Int64) {
	served = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if strings.HasSuffix(r.URL.Path, "/fail") {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), served
}

// TestClosedLoopLimit: a closed-loop run with a limit sends exactly that many requests, and a
// non-200 answer is an error that keeps its connection.
func TestClosedLoopLimit(t *testing.T) {
	addr, served := testServer(t)
	reqs := []request{
		buildRequest(addr, "/ok", nil, []byte("{}")),
		buildRequest(addr, "/fail", nil, []byte("{}")),
	}
	res, err := load(context.Background(), addr, reqs, 2, 0, time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 50 || res.Errors != 50 || !strings.Contains(res.FirstErr, "500") {
		t.Errorf("requests %d, errors %d (%q); want 50 and 50 (500)", res.Requests, res.Errors, res.FirstErr)
	}
	if n := served.Load(); n != 100 {
		t.Errorf("server saw %d requests; want 100", n)
	}
}

// TestOpenLoopAccounts: every request an open-loop run was due to send is either answered, with
// its send lateness recorded, or counted as unsent; none is lost or counted twice.
func TestOpenLoopAccounts(t *testing.T) {
	addr, served := testServer(t)
	reqs := []request{buildRequest(addr, "/ok", nil, []byte("{}"))}
	const rate, dur = 500, 200 * time.Millisecond
	res, err := load(context.Background(), addr, reqs, 4, rate, dur, 0)
	if err != nil {
		t.Fatal(err)
	}
	due := int(rate*dur.Seconds()) + 1 // request 0 is due at the start, the last one at the end
	if res.Requests+res.Errors != due {
		t.Errorf("answered %d + errors %d; want %d due", res.Requests, res.Errors, due)
	}
	if res.Errors > 0 && !strings.Contains(res.FirstErr, "not sent") {
		t.Errorf("error %q; only unsent requests may fail here", res.FirstErr)
	}
	if len(res.SendLate) != res.Requests || int(served.Load()) != res.Requests {
		t.Errorf("send lateness for %d, server saw %d; want both %d", len(res.SendLate), served.Load(), res.Requests)
	}
	for i := 1; i < len(res.Latencies); i++ {
		if res.Latencies[i] < res.Latencies[i-1] {
			t.Fatal("latencies not sorted")
		}
	}
}

// TestSchedLatencyPercentile reads a percentile of the delays recorded between two readings.
func TestSchedLatencyPercentile(t *testing.T) {
	buckets := []float64{0, 0.001, 0.002, 0.003, math.Inf(1)}
	before := &metrics.Float64Histogram{Counts: []uint64{5, 5, 0, 0}, Buckets: buckets}
	after := &metrics.Float64Histogram{Counts: []uint64{95, 9, 1, 0}, Buckets: buckets} // 90, 4, 1 new
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, time.Millisecond}, {95, 2 * time.Millisecond}, {99, 3 * time.Millisecond}} {
		if got := schedLatencyPercentile(before, after, c.p); got != c.want {
			t.Errorf("p%v = %v; want %v", c.p, got, c.want)
		}
	}
	if got := schedLatencyPercentile(after, after, 99); got != 0 {
		t.Errorf("p99 of no delays = %v; want 0", got)
	}
	inf := &metrics.Float64Histogram{Counts: []uint64{0, 0, 0, 3}, Buckets: buckets}
	if got := schedLatencyPercentile(&metrics.Float64Histogram{Counts: make([]uint64, 4), Buckets: buckets}, inf, 99); got != 3*time.Millisecond {
		t.Errorf("p99 in the open last bucket = %v; want its lower bound 3ms", got)
	}
}

// TestStamped: each request sent carries an operationID of its own, the rest byte for byte as built.
func TestStamped(t *testing.T) {
	req := buildRequest("h", "/openim/x", openimHeader, []byte(`{"a":1}`))
	var c conn
	first := string(c.stamped(req))
	second := string(c.stamped(req))
	if first == second || len(first) != len(req) || len(second) != len(req) {
		t.Fatalf("stamped twice:\n%q\n%q", first, second)
	}
	if !strings.Contains(first, opIDMark) || strings.Contains(first, opIDMark+strings.Repeat("0", opIDDigits)) {
		t.Errorf("stamped %q: want a number after %q", first, opIDMark)
	}
	if plain := buildRequest("h", "/tencent", nil, nil); string(c.stamped(plain)) != string(plain) {
		t.Error("a request without the mark was changed")
	}
}
