package main

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"time"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// The IM server's answer while the bridge delivers (scenario answer), the cost of delivery by the
// number of groups (deliveries) and a before-callback's verdict while groups are busy
// (verdict-busy). Each compares against a quiet run in the same bench run. These runs are not
// pinned: the bridge has both cores, as in production. The answer runs' subscribers run in a child
// process at a lower priority (subprocess.go); the others' in this process, whose delay is reported
// beside each figure.

// answerVariant is one answer run: subs connected before the load, after backlog events stored
// with nobody connected.
type answerVariant struct {
	name    string
	subs    []*pb.Subscription
	backlog int
	target  float64 // most p99 / quiet; 0: none
	// receivers is how many of subs (the first ones) get every event; the rest get none. 0: all.
	receivers int
}

func groupSubs(n int) []*pb.Subscription {
	out := make([]*pb.Subscription, n)
	for i := range out {
		out[i] = &pb.Subscription{Group: fmt.Sprintf("group%d", i)}
	}
	return out
}

// roomTails are n live tails: one watching everything, the others one IM group each, as a
// dashboard per chat room would, none of them a group the bench posts for.
func roomTails(n int) []*pb.Subscription {
	out := make([]*pb.Subscription, n)
	out[0] = &pb.Subscription{}
	for i := 1; i < n; i++ {
		out[i] = &pb.Subscription{Filter: &pb.EventFilter{GroupIds: []string{fmt.Sprintf("room%d", i)}}}
	}
	return out
}

func tailSubs(n int) []*pb.Subscription {
	out := make([]*pb.Subscription, n)
	for i := range out {
		out[i] = &pb.Subscription{}
	}
	return out
}

// answerScenarios: after-callbacks at cfg.AnswerRate (open loop) with nothing connected, then with
// 50 and 200 acking groups, 4 groups draining a backlog and 200 live tails; each answer p99 as a
// ratio to the quiet one, and how long after the load every event had reached every subscriber.
func answerScenarios(ctx context.Context, cfg config, dataDir func(string) string, rep *report) error {
	variants := []answerVariant{
		{name: "quiet"},
		{name: "50 groups", subs: groupSubs(50), target: 2},
		{name: "200 groups", subs: groupSubs(200), target: 3},
		{name: "4 groups draining", subs: groupSubs(4), backlog: cfg.AnswerBacklog, target: 2},
		{name: "200 tails", subs: tailSubs(200), target: 3},
		{name: "1000 room tails", subs: roomTails(1000), target: 3, receivers: 1},
	}
	var quiet time.Duration
	for _, v := range variants {
		name := "answer " + v.name
		step(name)
		res, caughtUp, peak, err := answerRun(ctx, cfg, dataDir(name), v)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		what := fmt.Sprintf("after-callback answer at %.0f req/s", cfg.AnswerRate)
		if v.backlog > 0 {
			what += fmt.Sprintf(", %d events stored first", v.backlog)
		}
		reportAnswer(rep, name, what, v, res, caughtUp, &quiet)
		if v.subs != nil && v.subs[0].Group == "" {
			rep.metric(name, "bridge RSS peak", mb(peak), "MB", "", true)
		}
	}
	return nil
}

// reportAnswer reports an answer run: its latencies, and for a variant with subscribers its p99 as
// a ratio to *quiet and how long the subscribers took to catch up; a quiet run sets *quiet.
func reportAnswer(rep *report, name, what string, v answerVariant, res loadResult, caughtUp time.Duration, quiet *time.Duration) {
	rep.latency(name, what, res.Latencies, "", true)
	rep.generator(name, res, true)
	rep.errors(name, res)
	p99 := percentile(res.Latencies, 99)
	if v.subs == nil {
		*quiet = p99
		return
	}
	ratio := float64(p99) / float64(*quiet)
	rep.metric(name, "p99 / quiet", ratio, "x", fmt.Sprintf("<= %.0f", v.target), ratio <= v.target)
	rep.metric(name, "every event delivered, after the load", caughtUp.Seconds(), "s", "< 60", caughtUp < time.Minute)
}

// answerRun is one answer variant on a fresh bridge. caughtUp is how long after the measured load
// the subscribers had every event stored while they were connected (groups: and the backlog); a
// minute or more when they had not. peak is the bridge's largest resident set.
func answerRun(ctx context.Context, cfg config, dir string, v answerVariant) (res loadResult, caughtUp time.Duration, peak int64, err error) {
	br, err := startBridge(cfg.Bridge, dir, false, cfg.Profile != "", cfg.auth.bridgeArgs()...)
	if err != nil {
		return res, 0, 0, err
	}
	defer br.stop()
	res, caughtUp, err = answerLoad(ctx, cfg, br, br, filepath.Base(dir), v)
	_, peak = br.rss()
	return res, caughtUp, peak, err
}

// answerLoad runs variant v: callbacks posted to ingest, subscribers connected to deliver.
func answerLoad(ctx context.Context, cfg config, ingest, deliver *server, name string, v answerVariant) (res loadResult, caughtUp time.Duration, err error) {
	reqs := afterRequests(ingest.httpAddr, cfg.auth)
	if v.backlog > 0 {
		if _, err := load(ctx, ingest.httpAddr, reqs, cfg.Conns, 0, time.Hour, v.backlog); err != nil {
			return res, 0, err
		}
	}
	var want int64
	received := func() int64 { return 0 }
	if len(v.subs) > 0 {
		rs, err := subscribeRemote(deliver.grpcAddr, cfg.auth, v.subs)
		if err != nil {
			return res, 0, err
		}
		defer rs.close()
		received = rs.received.Load
	}
	for _, sub := range v.subs {
		if sub.Group != "" {
			want += int64(v.backlog)
		}
	}
	warm, err := load(ctx, ingest.httpAddr, reqs, cfg.OpenConns, cfg.AnswerRate, cfg.Warmup, 0)
	if err != nil {
		return res, 0, err
	}
	done := profile(cfg, ingest, name)
	res, err = load(ctx, ingest.httpAddr, reqs, cfg.OpenConns, cfg.AnswerRate, cfg.Duration, 0)
	done()
	if err != nil {
		return res, 0, err
	}
	end := time.Now()
	receivers := cmp.Or(v.receivers, len(v.subs))
	want += int64(receivers) * int64(warm.Requests-warm.Errors+res.Requests-res.Errors)
	if !waitFor(func() bool { return received() >= want }, time.Minute) {
		return res, time.Minute, nil
	}
	return res, time.Since(end), nil
}

// tierScenarios: the answer run of 200 groups with the bridge split in two tiers on one NATS
// server (a child process): callbacks posted to an instance with --role ingest, the groups
// connected to one with --role deliver, run at a lower CPU priority (nice 10), as an operator
// would give delivery a lower priority than answering; against the ingest instance alone.
func tierScenarios(ctx context.Context, cfg config, dataDir func(string) string, rep *report) error {
	var quiet time.Duration
	for _, v := range []answerVariant{{name: "quiet"}, {name: "200 groups", subs: groupSubs(200), target: 3}} {
		name := "tiers " + v.name
		step(name)
		res, caughtUp, err := tierRun(ctx, cfg, dataDir(name), v)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		reportAnswer(rep, name, fmt.Sprintf("after-callback answer at %.0f req/s from the ingest instance", cfg.AnswerRate), v, res, caughtUp, &quiet)
	}
	return nil
}

// tierRun is one tier variant on a fresh NATS server: an ingest instance, and a deliver instance
// when v has subscribers.
func tierRun(ctx context.Context, cfg config, dir string, v answerVariant) (res loadResult, caughtUp time.Duration, err error) {
	ingest, deliver, stop, err := startTiers(cfg, dir, v.subs != nil)
	if err != nil {
		return res, 0, err
	}
	defer stop()
	return answerLoad(ctx, cfg, ingest, deliver, filepath.Base(dir), v)
}

// startTiers starts a NATS server (a child process) and an instance with --role ingest on it, and
// with withDeliver one with --role deliver at nice 10 (else deliver is the ingest instance); stop
// stops them all.
func startTiers(cfg config, dir string, withDeliver bool) (ingest, deliver *server, stop func(), err error) {
	url, stopNATS, err := startNATSProcess(filepath.Join(dir, "nats"))
	if err != nil {
		return nil, nil, nil, err
	}
	args := append([]string{"--nats-url", url}, cfg.auth.bridgeArgs()...)
	ingest, err = startBridge(cfg.Bridge, filepath.Join(dir, "ingest"), false, cfg.Profile != "", append(args, "--role", "ingest")...)
	if err != nil {
		stopNATS()
		return nil, nil, nil, err
	}
	if !withDeliver {
		return ingest, ingest, func() { ingest.stop(); stopNATS() }, nil
	}
	deliver, err = startBridgeNice(10, cfg.Bridge, filepath.Join(dir, "deliver"), false, false, append(args, "--role", "deliver")...)
	if err != nil {
		ingest.stop()
		stopNATS()
		return nil, nil, nil, err
	}
	return ingest, deliver, func() { deliver.stop(); ingest.stop(); stopNATS() }, nil
}

// deliveryRates: after-callbacks as fast as they are answered (cfg.Conns connections, closed loop)
// with 16 and with 500 acking groups: the events the groups received per second, and 500 / 16.
func deliveryRates(ctx context.Context, cfg config, dataDir func(string) string, rep *report) error {
	var rates []float64
	for _, n := range []int{16, 500} {
		name := fmt.Sprintf("deliveries %d groups", n)
		step(name)
		var rate float64
		var res loadResult
		err := withBridge(cfg, dataDir(name), false, n, nil, func(br *server, rec *receipts) error {
			reqs := afterRequests(br.httpAddr, cfg.auth)
			if _, err := load(ctx, br.httpAddr, reqs, cfg.Conns, 0, cfg.Warmup, 0); err != nil {
				return err
			}
			defer profile(cfg, br, name)()
			before, start := rec.received.Load(), time.Now()
			var err error
			res, err = load(ctx, br.httpAddr, reqs, cfg.Conns, 0, cfg.Duration, 0)
			rate = float64(rec.received.Load()-before) / time.Since(start).Seconds()
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rep.metric(name, "events received by the groups", rate, "events/s", "", true)
		rep.metric(name, "callbacks answered meanwhile", res.rate(), "req/s", "", true)
		rep.errors(name, res)
		rates = append(rates, rate)
	}
	rep.metric("deliveries", "500 groups / 16", rates[1]/rates[0], "x", ">= 0.9", rates[1] >= 0.9*rates[0])
	return nil
}

// verdictBusy: before-callbacks at cfg.AnswerRate with one decider, quiet and with 200 acking groups
// kept busy by after-callbacks at the same rate (the groups get the before-callbacks too).
func verdictBusy(ctx context.Context, cfg config, dataDir func(string) string, rep *report) error {
	var quiet time.Duration
	for _, n := range []int{0, 200} {
		name := fmt.Sprintf("verdict %d busy groups", n)
		step(name)
		var res loadResult
		// The decider runs in this process; the busy groups in a child process, as the answer runs'.
		err := withBridge(cfg, dataDir(name), false, 0, verdictDecider, func(br *server, _ *receipts) error {
			var err error
			res, err = busyVerdicts(ctx, cfg, br, br, n, name)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rep.latency(name, fmt.Sprintf("before-callback answer, 1 decider, %.0f req/s", cfg.AnswerRate), res.Latencies, "", true)
		rep.generator(name, res, true)
		rep.errors(name, res)
		p99 := percentile(res.Latencies, 99)
		if n == 0 {
			quiet = p99
			continue
		}
		ratio := float64(p99) / float64(quiet)
		rep.metric(name, "p99 / quiet", ratio, "x", "", true)
	}
	return nil
}

// busyVerdicts posts before-callbacks at cfg.AnswerRate to ingest and measures their answers, while
// after-callbacks at the same rate keep n acking groups busy, connected to deliver from a child
// process (the groups get the before-callbacks too). The decider is the caller's.
func busyVerdicts(ctx context.Context, cfg config, ingest, deliver *server, n int, name string) (loadResult, error) {
	busy := make(chan error, 1)
	if n > 0 {
		rs, err := subscribeRemote(deliver.grpcAddr, cfg.auth, groupSubs(n))
		if err != nil {
			return loadResult{}, err
		}
		defer rs.close()
		go func() {
			_, err := load(ctx, ingest.httpAddr, afterRequests(ingest.httpAddr, cfg.auth), cfg.OpenConns, cfg.AnswerRate, cfg.Warmup+cfg.Duration, 0)
			busy <- err
		}()
	} else {
		busy <- nil
	}
	reqs := beforeRequests(ingest.httpAddr, cfg.auth)
	if _, err := load(ctx, ingest.httpAddr, reqs, cfg.OpenConns, cfg.AnswerRate, cfg.Warmup, 0); err != nil {
		return loadResult{}, err
	}
	done := profile(cfg, ingest, name)
	res, err := load(ctx, ingest.httpAddr, reqs, cfg.OpenConns, cfg.AnswerRate, cfg.Duration, 0)
	done()
	if err != nil {
		return res, err
	}
	return res, <-busy
}

// tierVerdicts: before-callbacks to the ingest instance of two tiers (as tierRun's) while 200 groups
// on the deliver instance, at nice 10, are kept busy; the decider connected to the deliver instance,
// then to the ingest instance, where its traffic runs with the answers.
func tierVerdicts(ctx context.Context, cfg config, dataDir func(string) string, rep *report) error {
	var onDeliver time.Duration
	for _, at := range []string{"deliver", "ingest"} {
		name := "tiers verdict, decider on " + at
		step(name)
		res, err := tierVerdictRun(ctx, cfg, dataDir(name), at, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rep.latency(name, fmt.Sprintf("before-callback answer, 1 decider, 200 busy groups, %.0f req/s", cfg.AnswerRate), res.Latencies, "", true)
		rep.generator(name, res, true)
		rep.errors(name, res)
		p99 := percentile(res.Latencies, 99)
		if at == "deliver" {
			onDeliver = p99
			continue
		}
		rep.metric(name, "p99 / decider on deliver", float64(p99)/float64(onDeliver), "x", "", true)
	}
	return nil
}

// tierVerdictRun is one tierVerdicts run on a fresh NATS server, the decider on the instance that
// at names ("ingest" or "deliver").
func tierVerdictRun(ctx context.Context, cfg config, dir, at, name string) (loadResult, error) {
	ingest, deliver, stop, err := startTiers(cfg, dir, true)
	if err != nil {
		return loadResult{}, err
	}
	defer stop()
	decideAt := deliver
	if at == "ingest" {
		decideAt = ingest
	}
	dec, err := subscribe(decideAt.grpcAddr, cfg.auth, verdictDecider, nil)
	if err != nil {
		return loadResult{}, err
	}
	defer dec.close()
	return busyVerdicts(ctx, cfg, ingest, deliver, 200, name)
}
