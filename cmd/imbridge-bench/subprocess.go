package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Subscribers of the scale scenarios run in a child process (this binary, mode subscribers) at a
// lower CPU priority: in production they are other machines, and in this process they would take
// the load generator's CPU, whose lateness would then be counted as the bridge's answer time.

// subscriberNice is the child's niceness.
const subscriberNice = 10

// Environment of the child: the bridge's gRPC address, the subscriptions (base64 of each encoded
// Subscription, comma-separated) and the token, if any.
const (
	envSubAddr  = "IMBRIDGE_BENCH_SUB_ADDR"
	envSubs     = "IMBRIDGE_BENCH_SUBS"
	envSubToken = "IMBRIDGE_BENCH_SUB_TOKEN"
)

// remoteSubscribers are subscribers in a child process; received counts the events they got.
type remoteSubscribers struct {
	cmd      *exec.Cmd
	received atomic.Int64
	exited   chan error
}

// subscribeRemote starts subs in a child process and returns once the bridge confirmed every one.
func subscribeRemote(addr string, a *benchAuth, subs []*pb.Subscription) (*remoteSubscribers, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	enc := make([]string, len(subs))
	for i, s := range subs {
		b, err := proto.Marshal(s)
		if err != nil {
			return nil, err
		}
		enc[i] = base64.StdEncoding.EncodeToString(b)
	}
	cmd := exec.Command("nice", "-n", strconv.Itoa(subscriberNice), self, "subscribers")
	cmd.Env = append(os.Environ(), envSubAddr+"="+addr, envSubs+"="+strings.Join(enc, ","))
	if a != nil {
		cmd.Env = append(cmd.Env, envSubToken+"="+a.token)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &remoteSubscribers{cmd: cmd, exited: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if line == "ready" {
				close(ready)
				continue
			}
			if n, err := strconv.ParseInt(line, 10, 64); err == nil {
				r.received.Store(n)
			}
		}
		r.exited <- cmd.Wait()
	}()
	select {
	case <-ready:
		return r, nil
	case err := <-r.exited:
		return nil, fmt.Errorf("subscriber process: %v", err)
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		return nil, errors.New("subscriber process: not subscribed after a minute")
	}
}

func (r *remoteSubscribers) close() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(20 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
}

// runSubscribers is the child: it subscribes, says "ready", then prints the events received so
// far every few milliseconds while the count moves, until SIGTERM.
func runSubscribers() error {
	var a *benchAuth
	if tok := os.Getenv(envSubToken); tok != "" {
		a = &benchAuth{token: tok}
	}
	rec := &receipts{}
	var subs []*subscriber
	for _, enc := range strings.Split(os.Getenv(envSubs), ",") {
		b, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return err
		}
		sub := new(pb.Subscription)
		if err := proto.Unmarshal(b, sub); err != nil {
			return err
		}
		s, err := subscribe(os.Getenv(envSubAddr), a, sub, rec)
		if err != nil {
			return err
		}
		subs = append(subs, s)
	}
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	last := int64(-1)
	for {
		select {
		case <-ctx.Done():
			for _, s := range subs {
				s.close()
			}
			return nil
		case <-tick.C:
			if n := rec.received.Load(); n != last {
				fmt.Println(n)
				last = n
			}
		}
	}
}

// startNATSProcess runs a one-node JetStream server in a child process (this binary, mode
// nats-server), so that its work is not charged to the load generator's process.
func startNATSProcess(dir string) (url string, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(self, "nats-server")
	cmd.Env = append(os.Environ(), envNATSDir+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		stop()
		return "", nil, errors.New("nats-server process: no URL")
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return sc.Text(), stop, nil
}

// envNATSDir is the nats-server child's store directory.
const envNATSDir = "IMBRIDGE_BENCH_NATS_DIR"

// runNATSServer is the child: it prints its client URL and serves until SIGTERM.
func runNATSServer() error {
	nn, err := startNATSNodes(os.Getenv(envNATSDir), 1)
	if err != nil {
		return err
	}
	defer nn.stop()
	fmt.Println(nn.urls)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
