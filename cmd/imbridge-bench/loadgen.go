package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
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
	c net.Conn
	r *bufio.Reader
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
	if _, err := c.c.Write(req); err != nil {
		return err
	}
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
}

func (r loadResult) rate() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

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
	var (
		next     atomic.Int64
		unsent   atomic.Int64
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, 1<<16)
		errs     int
		firstErr string
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(dur)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			localErrs, localFirst := 0, ""
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if limit > 0 && i >= int64(limit) {
					break
				}
				now := time.Now()
				due := now
				if rate > 0 {
					due = start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
					if due.After(deadline) {
						break
					}
					if now.After(deadline) {
						// Overdue and the run is over: the server fell behind the offered rate.
						unsent.Add(1)
						continue
					}
					if d := due.Sub(now); d > 0 {
						time.Sleep(d)
					}
				} else if now.After(deadline) && limit == 0 {
					break
				}
				err := c.do(reqs[i%int64(len(reqs))])
				if err != nil {
					localErrs++
					if localFirst == "" {
						localFirst = err.Error()
					}
					if !errors.Is(err, errStatus) {
						return // the connection is gone
					}
					continue
				}
				local = append(local, time.Since(due))
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += localErrs
			if firstErr == "" {
				firstErr = localFirst
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	if n := int(unsent.Load()); n > 0 {
		errs += n
		if firstErr == "" {
			firstErr = "not sent by the end of the run: the server fell behind the offered rate"
		}
	}
	return loadResult{Requests: len(lat), Errors: errs, FirstErr: firstErr, Elapsed: time.Since(start), Latencies: lat}, nil
}

// percentile of sorted latencies, p in [0, 100].
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}
