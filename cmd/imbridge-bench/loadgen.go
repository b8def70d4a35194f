package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The load generator is the same for the baseline and the bridge: raw keep-alive TCP connections,
// prebuilt HTTP/1.1 requests, the response read just far enough to know it is complete. A net/http
// client costs more CPU than the servers under test on a 2-core machine.

// request is one prebuilt HTTP request.
type request []byte

func buildRequest(host, path string, header map[string]string, body []byte) request {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", path, host, len(body))
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// conn is one keep-alive connection.
type conn struct {
	c   net.Conn
	r   *bufio.Reader
	due atomic.Int64 // open loop: when the request in flight was due, in ns since the run started
	buf []byte       // the request being sent, stamped
}

// A request whose header holds opIDMark followed by opIDDigits zeros is sent with a number of its
// own there (stamped), so that every request is a distinct callback: the bridge answers a repeated
// operationID and body without storing it again (its dedup of IM retries), which would make every
// request after the first a cheap duplicate.
const (
	opIDMark   = "operationID: bench-"
	opIDDigits = 16
)

// opIDs numbers the stamped requests of this process.
var opIDs atomic.Uint64

// stamped returns req with the next operation number in it, if it has the mark.
func (c *conn) stamped(req request) []byte {
	at := bytes.Index(req, []byte(opIDMark))
	if at < 0 {
		return req
	}
	c.buf = append(c.buf[:0], req...)
	n, p := opIDs.Add(1), at+len(opIDMark)
	for k := opIDDigits - 1; k >= 0; k-- {
		c.buf[p+k] = "0123456789abcdef"[n&15]
		n >>= 4
	}
	return c.buf
}

func dial(addr string) (*conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &conn{c: c, r: bufio.NewReaderSize(c, 16<<10)}, nil
}

var errStatus = errors.New("non-200 answer")

// do sends one request and reads the whole response.
func (c *conn) do(req request) error {
	if _, err := c.c.Write(c.stamped(req)); err != nil {
		return err
	}
	return c.read()
}

// read reads one whole response.
func (c *conn) read() error {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	ok := len(line) >= 12 && string(line[9:12]) == "200"
	length := -1
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(h) <= 2 {
			break
		}
		if len(h) > 16 && (h[0] == 'C' || h[0] == 'c') && bytes.EqualFold(h[:15], []byte("Content-Length:")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(h[15:])))
			if err != nil {
				return err
			}
		}
	}
	if length < 0 {
		return errors.New("answer without Content-Length")
	}
	if _, err := c.r.Discard(length); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s", errStatus, bytes.TrimSpace(line))
	}
	return nil
}

// loadResult is what one load run measured.
type loadResult struct {
	Requests  int
	Errors    int
	FirstErr  string
	Elapsed   time.Duration
	Latencies []time.Duration // sorted
	// SendLate is how late an open-loop run sent its requests, sorted: the generator's own error
	// plus waits for a free connection, both included in Latencies (which count from the due time).
	SendLate []time.Duration
	// SelfCPU is this process's CPU time (user and system) over the run: the generator's, and its
	// subscribers' and deciders' when there are any.
	SelfCPU time.Duration
	// SchedDelayP99 is, for an open-loop run, the 99th percentile of how long this process's
	// goroutines (readers, subscribers, deciders) waited to run once ready (runtime/metrics
	// /sched/latencies): a delay on this side that the latency figures include.
	SchedDelayP99 time.Duration
}

func (r loadResult) rate() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

func (r loadResult) selfCPUPerRequest() time.Duration {
	if r.Requests == 0 {
		return 0
	}
	return r.SelfCPU / time.Duration(r.Requests)
}

// load runs requests over conns connections for dur. rate > 0: open loop, request i is due at
// start + i/rate and its latency counts from then, so a stalled server shows in the tail instead
// of slowing the senders down (coordinated omission). rate == 0: closed loop, as fast as answers
// come. limit > 0 stops after that many requests.
func load(ctx context.Context, addr string, reqs []request, conns int, rate float64, dur time.Duration, limit int) (loadResult, error) {
	cs := make([]*conn, conns)
	for i := range cs {
		c, err := dial(addr)
		if err != nil {
			return loadResult{}, err
		}
		defer c.c.Close()
		cs[i] = c
	}
	cpu0 := selfCPU()
	var res loadResult
	if rate > 0 {
		res = openLoop(ctx, cs, reqs, rate, dur)
	} else {
		res = closedLoop(ctx, cs, reqs, dur, limit)
	}
	res.SelfCPU = selfCPU() - cpu0
	return res, nil
}

// closedLoop sends each connection's next request as soon as its last one is answered, until dur
// has passed or, with limit > 0, limit requests have been sent.
func closedLoop(ctx context.Context, cs []*conn, reqs []request, dur time.Duration, limit int) loadResult {
	var (
		next atomic.Int64
		res  results
		wg   sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(dur)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local results
			defer res.merge(&local)
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				due := time.Now()
				if limit > 0 && i >= int64(limit) || limit == 0 && due.After(deadline) {
					break
				}
				if !local.add(c.do(reqs[i%int64(len(reqs))]), due) {
					return // the connection is gone
				}
			}
		}()
	}
	wg.Wait()
	return res.result(time.Since(start))
}

// selfCPU is this process's CPU time so far, user and system.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// openLoop sends request i at start + i/rate until dur has passed, each on a connection with no
// request in flight, and counts its latency from that due time: a server that stalls shows in the
// tail instead of slowing the sender down (coordinated omission).
//
// One thread sends, sleeping with nanosleep between requests, and each connection has a goroutine
// that only reads answers. Measured at 2k req/s on one core, other designs added their own delays
// to every figure: time.Sleep wakes up to 1 ms late (the runtime's poller waits in whole
// milliseconds), and handing each due request to a sending goroutine added 0.1-0.2 ms at p50 and
// over 1 ms at p99. SendLate reports what is left.
func openLoop(ctx context.Context, cs []*conn, reqs []request, rate float64, dur time.Duration) loadResult {
	var (
		res  results
		wg   sync.WaitGroup
		free = make(chan *conn, len(cs))
	)
	start := time.Now()
	for _, c := range cs {
		free <- c
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local results
			defer res.merge(&local)
			for {
				err := c.read()
				due := start.Add(time.Duration(c.due.Load()))
				if !local.add(err, due) {
					return // the connection is gone, or closed at the end of the run
				}
				free <- c
			}
		}()
	}

	sched0 := schedLatencies()
	runtime.LockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0) // ns, for this thread; the default is 50 µs
	deadline := start.Add(dur)
	var late []time.Duration
	i := int64(0)
	for ; ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if due.After(deadline) {
			break
		}
		sleepUntil(due)
		var c *conn
		select {
		case c = <-free:
		default: // every connection is busy: wait for one, until the run is over
			select {
			case c = <-free:
			case <-time.After(time.Until(deadline)):
			}
		}
		if c == nil {
			break
		}
		late = append(late, time.Since(due))
		c.due.Store(int64(due.Sub(start)))
		if _, err := c.c.Write(c.stamped(reqs[i%int64(len(reqs))])); err != nil {
			res.merge(&results{errs: 1, firstErr: err.Error()})
		}
	}
	runtime.UnlockOSThread()
	// Requests 0 to dur×rate were due.
	if unsent := int(float64(deadline.Sub(start))/float64(time.Second)*rate) + 1 - int(i); unsent > 0 {
		res.merge(&results{errs: unsent, firstErr: "not sent by the end of the run: the server fell behind the offered rate"})
	}
	// Collect every connection, so that all answers are in, then close them to end the readers.
	wait := time.NewTimer(10 * time.Second)
	defer wait.Stop()
collect:
	for range cs {
		select {
		case <-free:
		case <-wait.C:
			break collect // an answer that never came; closing its connection ends its reader
		}
	}
	for _, c := range cs {
		c.c.Close()
	}
	wg.Wait()
	out := res.result(time.Since(start))
	slices.Sort(late)
	out.SendLate = late
	out.SchedDelayP99 = schedLatencyPercentile(sched0, schedLatencies(), 99)
	return out
}

// results collects latencies and errors, per goroutine, then merged.
type results struct {
	mu       sync.Mutex
	lat      []time.Duration
	errs     int
	firstErr string
}

// add counts one request that was due at due; false if the connection is no longer usable.
func (r *results) add(err error, due time.Time) bool {
	if err == nil {
		r.lat = append(r.lat, time.Since(due))
		return true
	}
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	r.errs++
	if r.firstErr == "" {
		r.firstErr = err.Error()
	}
	return errors.Is(err, errStatus)
}

func (r *results) merge(o *results) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lat = append(r.lat, o.lat...)
	r.errs += o.errs
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
}

func (r *results) result(elapsed time.Duration) loadResult {
	slices.Sort(r.lat)
	return loadResult{Requests: len(r.lat), Errors: r.errs, FirstErr: r.firstErr, Elapsed: elapsed, Latencies: r.lat}
}

// sleepUntil waits until t (see openLoop for why not time.Sleep).
func sleepUntil(t time.Time) {
	for d := time.Until(t); d > 0; d = time.Until(t) {
		ts := unix.NsecToTimespec(int64(d))
		_ = unix.Nanosleep(&ts, nil)
	}
}

// schedLatencies reads the runtime's histogram of goroutine scheduling delays so far.
func schedLatencies() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	return s[0].Value.Float64Histogram()
}

// schedLatencyPercentile is the percentile p of the delays recorded between two readings, as the
// upper bound of its histogram bucket.
func schedLatencyPercentile(before, after *metrics.Float64Histogram, p float64) time.Duration {
	if before == nil || after == nil || len(before.Counts) != len(after.Counts) {
		return 0
	}
	var total uint64
	for i := range after.Counts {
		total += after.Counts[i] - before.Counts[i]
	}
	var seen uint64
	for i := range after.Counts {
		seen += after.Counts[i] - before.Counts[i]
		if total > 0 && float64(seen) >= p/100*float64(total) {
			upper := after.Buckets[i+1]
			if math.IsInf(upper, 1) {
				upper = after.Buckets[i]
			}
			return time.Duration(upper * float64(time.Second))
		}
	}
	return 0
}

// percentile of sorted latencies, p in [0, 100].
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}
