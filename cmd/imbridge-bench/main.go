// Command imbridge-bench measures the bridge against a bare net/http handler in one run, with the
// same load generator, and prints a table and a JSON file of the results (`make bench`).
//
// Throughput runs are unpinned (server and generator share both cores, like wrk -t2 -c32). Latency
// runs pin the server to one core with GOMAXPROCS=1 and this process to the other, and use an open
// loop (fixed offered rate, latency from each request's scheduled time).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/imbridge/imbridge/examples"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

type config struct {
	Bridge        string        `json:"-"`
	Out           string        `json:"-"`
	Duration      time.Duration `json:"duration"`
	Warmup        time.Duration `json:"warmup"`
	Conns         int           `json:"conns"`
	OpenConns     int           `json:"open_loop_conns"`
	E2ERate       float64       `json:"e2e_rate"`
	VerdictRate   float64       `json:"verdict_rate"`
	Backlog       int           `json:"backlog"`
	FanOut        []int         `json:"fan_out"`
	Pin           bool          `json:"pinned_latency_runs"`
	Profile       string        `json:"-"`
	Scenarios     []string      `json:"scenarios"`
	Auth          bool          `json:"auth"`
	OrderEvents   int           `json:"order_events"`
	AnswerRate    float64       `json:"answer_rate"`
	AnswerBacklog int           `json:"answer_backlog"`
	auth          *benchAuth    // set by run when Auth
}

func (c config) wants(s string) bool { return slices.Contains(c.Scenarios, s) }

func main() {
	if len(os.Args) > 1 {
		serve := map[string]func() error{"baseline-server": runBaselineServer, "floor-server": runFloorServer, "subscribers": runSubscribers, "nats-server": runNATSServer}[os.Args[1]]
		if serve != nil {
			if err := serve(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			return
		}
	}
	var cfg config
	var fanout, scenarios string
	flag.StringVar(&cfg.Bridge, "bridge", "bin/imbridge", "imbridge binary to measure")
	flag.StringVar(&cfg.Out, "out", "bench/results/latest.json", "where to write the JSON results")
	flag.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured time of each load run")
	flag.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured load before each run")
	flag.IntVar(&cfg.Conns, "conns", 32, "keep-alive connections for throughput runs")
	flag.IntVar(&cfg.OpenConns, "open-conns", 16, "keep-alive connections for fixed-rate runs")
	flag.Float64Var(&cfg.E2ERate, "e2e-rate", 5000, "offered req/s for the end-to-end latency run")
	flag.Float64Var(&cfg.VerdictRate, "verdict-rate", 2000, "offered req/s for the verdict round trip run")
	flag.IntVar(&cfg.Backlog, "backlog", 200000, "events stored before one subscriber drains them")
	flag.StringVar(&fanout, "fan-out", "1,4,16", "subscriber group counts for the fan-out runs")
	flag.StringVar(&cfg.Profile, "profile", "", "save the bridge's CPU profile, allocations and execution trace of each measured run in this directory (for diagnosis: tracing slows the bridge)")
	flag.StringVar(&scenarios, "scenarios", "ingest,fan-out,verdict,backlog,order,answer,deliveries,verdict-busy", "which scenarios to run (the baseline always runs); also cluster: 2 bridges on a 3-node JetStream cluster against 1 on 1 node; tiers: the 200-group answer run with an ingest and a deliver instance, and the busy verdict run with the decider on either")
	flag.Float64Var(&cfg.AnswerRate, "answer-rate", 200, "offered req/s of the answer and verdict-busy runs (open loop)")
	flag.IntVar(&cfg.AnswerBacklog, "answer-backlog", 100000, "events stored before 4 groups drain them in the answer run")
	flag.IntVar(&cfg.OrderEvents, "order-events", 40000, "events (over 1000 IM groups) stored before 4 members of a group drain them, ordered and not")
	flag.BoolVar(&cfg.Pin, "pin", numCPU() >= 2, "pin server and generator to separate cores for latency runs")
	flag.BoolVar(&cfg.Auth, "auth", false, "run the bridge with authentication on: OpenIM Basic credentials and a path secret, a token for every subscriber")
	flag.Parse()
	for _, f := range strings.Split(fanout, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "--fan-out: bad count %q\n", f)
			os.Exit(2)
		}
		cfg.FanOut = append(cfg.FanOut, n)
	}
	cfg.Scenarios = strings.Split(scenarios, ",")
	rep, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imbridge-bench:", err)
		os.Exit(1)
	}
	rep.print(os.Stdout)
	if err := rep.write(cfg.Out); err != nil {
		fmt.Fprintln(os.Stderr, "imbridge-bench:", err)
		os.Exit(1)
	}
	fmt.Printf("\nresults written to %s\n", cfg.Out)
}

// bodies: seed 000 (real server form) and seed 002, alternating; with a's credentials (nil: none).
func afterRequests(addr string, a *benchAuth) []request {
	var out []request
	for _, name := range []string{"openim-after-set-group-info-ex", "openim-after-quit-group"} {
		ex := examples.Must(name)
		out = append(out, buildRequest(addr, a.openimPath(ex.Command), a.openimHeader(), ex.Body))
	}
	return out
}

// openimHeader is what OpenIM sends; each request gets an operationID of its own (conn.stamped).
var openimHeader = map[string]string{"Content-Type": "application/json; charset=utf-8", "operationID": "bench-" + strings.Repeat("0", opIDDigits)}

func run(cfg config) (*report, error) {
	if _, err := os.Stat(cfg.Bridge); err != nil {
		return nil, fmt.Errorf("bridge binary: %w (make bench builds it)", err)
	}
	rep := newReport(cfg)
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "imbridge-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dataDir := func(name string) string { return filepath.Join(tmp, name) }
	if cfg.Auth {
		if cfg.auth, err = newBenchAuth(tmp); err != nil {
			return nil, err
		}
	}

	// 1. Baseline.
	step("baseline")
	base, err := startBaseline(false)
	if err != nil {
		return nil, err
	}
	baseRes, baseCPU, err := loadServer(ctx, cfg, base, "baseline", afterRequests(base.httpAddr, nil), cfg.Conns, 0)
	base.stop()
	if err != nil {
		return nil, err
	}
	rep.load("baseline", "net/http + encoding/json, fixed answer", baseRes)
	rep.metric("baseline", "server CPU per request", us(baseCPU), "µs", "", true)
	rep.metric("baseline", "generator CPU per request", us(baseRes.selfCPUPerRequest()), "µs", "", true)

	if cfg.wants("ingest") {
		if err := ingest(ctx, cfg, dataDir("ingest"), rep, baseRes); err != nil {
			return nil, err
		}
	}
	if cfg.wants("fan-out") {
		if err := fanOuts(ctx, cfg, dataDir, rep); err != nil {
			return nil, err
		}
	}
	if cfg.wants("verdict") {
		step("verdict floor")
		floor, floorCPU, err := verdictFloor(ctx, cfg)
		if err != nil {
			return nil, err
		}
		rep.latency("verdict-floor", fmt.Sprintf("net/http + gRPC decider, no log, %.0f req/s", cfg.VerdictRate), floor.Latencies, "", true)
		rep.generator("verdict-floor", floor, true)
		rep.metric("verdict-floor", "server CPU per request", us(floorCPU), "µs", "", true)
		rep.errors("verdict-floor", floor)

		step("verdict")
		verdict, cpu, err := verdictRoundTrip(ctx, cfg, dataDir("verdict"))
		if err != nil {
			return nil, err
		}
		rep.latency("verdict", fmt.Sprintf("before-callback answer, 1 decider, %.0f req/s", cfg.VerdictRate), verdict.Latencies, "p99 <= 2ms", percentile(verdict.Latencies, 99) <= 2*time.Millisecond)
		rep.generator("verdict", verdict, true)
		rep.metric("verdict", "bridge CPU per request", us(cpu), "µs", "", true)
		rep.errors("verdict", verdict)
	}
	if cfg.wants("backlog") {
		step("backlog")
		rate, err := backlogDrain(ctx, cfg, dataDir("backlog"))
		if err != nil {
			return nil, err
		}
		rep.metric("backlog", fmt.Sprintf("drain of %d stored events", cfg.Backlog), rate, "events/s", ">= 100000", rate >= 100000)
	}
	if cfg.wants("cluster") {
		step("cluster")
		single, cluster, err := clusterIngest(ctx, cfg, dataDir("cluster"))
		if err != nil {
			return nil, err
		}
		rep.load("cluster", "1 bridge on a 1-node NATS (--nats-url), after-callbacks", single)
		rep.load("cluster", "2 bridges on a 3-node NATS cluster, R3 stream, after-callbacks", cluster)
		rep.metric("cluster", "2 bridges on 3 nodes / 1 on 1 (same 2 cores)", cluster.rate()/single.rate(), "x", "", true)
		rep.errors("cluster", cluster)
	}
	if cfg.wants("answer") {
		if err := answerScenarios(ctx, cfg, dataDir, rep); err != nil {
			return nil, err
		}
	}
	if cfg.wants("tiers") {
		if err := tierScenarios(ctx, cfg, dataDir, rep); err != nil {
			return nil, err
		}
		if err := tierVerdicts(ctx, cfg, dataDir, rep); err != nil {
			return nil, err
		}
	}
	if cfg.wants("deliveries") {
		if err := deliveryRates(ctx, cfg, dataDir, rep); err != nil {
			return nil, err
		}
	}
	if cfg.wants("verdict-busy") {
		if err := verdictBusy(ctx, cfg, dataDir, rep); err != nil {
			return nil, err
		}
	}
	if cfg.wants("order") {
		var rates [2]float64
		for i, order := range []pb.Order{pb.Order_ORDER_UNSPECIFIED, pb.Order_ORDER_IM_GROUP} {
			step("order " + order.String())
			rate, err := orderedDrain(ctx, cfg, dataDir("order-"+order.String()), order)
			if err != nil {
				return nil, err
			}
			rates[i] = rate
		}
		what := fmt.Sprintf("drain of %d stored events of 1000 IM groups by 4 members", cfg.OrderEvents)
		rep.metric("order", what+", unordered", rates[0], "events/s", "", true)
		rep.metric("order", what+", ordered per IM group", rates[1], "events/s", "", true)
		rep.metric("order", "ordered / unordered", rates[1]/rates[0], "x", "", true)
	}
	return rep, nil
}

// orderedDrain stores cfg.OrderEvents after-callbacks about 1000 IM groups, then drains them with a
// group of 4 members ordered as asked, and returns the events delivered per second.
func orderedDrain(ctx context.Context, cfg config, dir string, order pb.Order) (float64, error) {
	var rate float64
	err := withBridge(cfg, dir, false, 0, nil, func(br *server, _ *receipts) error {
		ex := examples.Must("openim-after-quit-group")
		var reqs []request
		for i := range 1000 {
			body, err := withGroupID(ex.Body, fmt.Sprintf("bench-group-%d", i))
			if err != nil {
				return err
			}
			reqs = append(reqs, buildRequest(br.httpAddr, cfg.auth.openimPath(ex.Command), cfg.auth.openimHeader(), body))
		}
		if _, err := load(ctx, br.httpAddr, reqs, cfg.Conns, 0, time.Hour, cfg.OrderEvents); err != nil {
			return err
		}
		rec := &receipts{}
		defer profile(cfg, br, "order-"+order.String())()
		start := time.Now()
		for range 4 {
			sub, err := subscribe(br.grpcAddr, cfg.auth, &pb.Subscription{Group: "drain", Order: order, MaxInFlight: 256}, rec)
			if err != nil {
				return err
			}
			defer sub.close()
		}
		if !waitFor(func() bool { return rec.received.Load() >= int64(cfg.OrderEvents) }, 5*time.Minute) {
			return fmt.Errorf("drained %d of %d events", rec.received.Load(), cfg.OrderEvents)
		}
		rate = float64(cfg.OrderEvents) / time.Since(start).Seconds()
		return nil
	})
	return rate, err
}

// withGroupID is an OpenIM callback body with its groupID replaced.
func withGroupID(body []byte, id string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	m["groupID"] = id
	return json.Marshal(m)
}

func step(name string) { fmt.Fprintf(os.Stderr, "bench: %s\n", name) }

// ingest: after-callbacks as fast as they are answered, one acking group, and the bridge's memory.
func ingest(ctx context.Context, cfg config, dir string, rep *report, baseRes loadResult) error {
	step("ingest")
	br, err := startBridge(cfg.Bridge, dir, false, cfg.Profile != "", cfg.auth.bridgeArgs()...)
	if err != nil {
		return err
	}
	idle, _ := br.rss()
	rec := &receipts{}
	sub, err := subscribe(br.grpcAddr, cfg.auth, &pb.Subscription{Group: "bench"}, rec)
	if err != nil {
		br.stop()
		return err
	}
	ingRes, cpu, err := loadServer(ctx, cfg, br, "ingest", afterRequests(br.httpAddr, cfg.auth), cfg.Conns, 0)
	_, peak := br.rss()
	sub.close()
	br.stop()
	if err != nil {
		return err
	}
	ratio := ingRes.rate() / baseRes.rate()
	rep.load("ingest", "after-callbacks, embedded log, 1 acking group", ingRes)
	rep.metric("ingest", "ratio to baseline", ratio, "x", ">= 0.6", ratio >= 0.6)
	rep.metric("ingest", "bridge CPU per request", us(cpu), "µs", "", true)
	rep.metric("ingest", "generator and subscriber CPU per request", us(ingRes.selfCPUPerRequest()), "µs", "", true)
	rep.metric("memory", "RSS idle", mb(idle), "MB", "<= 40", mb(idle) <= 40)
	rep.metric("memory", "RSS peak during ingest", mb(peak), "MB", "", true)
	return nil
}

// fanOuts: end to end at a fixed rate, and ingest, with 1, 4, 16 groups.
func fanOuts(ctx context.Context, cfg config, dataDir func(string) string, rep *report) error {
	for _, groups := range cfg.FanOut {
		name := fmt.Sprintf("fan-out %d", groups)
		step(name)
		tput, e2e, gen, err := fanOut(ctx, cfg, dataDir(name), groups)
		if err != nil {
			return err
		}
		rep.metric(name, "ingest", tput.rate(), "req/s", "", true)
		if groups == 1 {
			rep.latency("end to end", fmt.Sprintf("POST arrival to subscriber receipt at %.0f req/s", cfg.E2ERate), e2e, "p99 <= 1.5ms", percentile(e2e, 99) <= 1500*time.Microsecond)
			rep.generator("end to end", gen, false)
		} else {
			rep.metric(name, "end to end p99", ms(percentile(e2e, 99)), "ms", "", true)
		}
	}
	return nil
}

// loadServer is warmAndLoad against a server process; it also returns the server's CPU time (user
// and system) per measured request.
func loadServer(ctx context.Context, cfg config, srv *server, name string, reqs []request, conns int, rate float64) (loadResult, time.Duration, error) {
	if cfg.Warmup > 0 {
		if _, err := load(ctx, srv.httpAddr, reqs, conns, rate, cfg.Warmup, 0); err != nil {
			return loadResult{}, 0, err
		}
	}
	defer profile(cfg, srv, name)()
	before := srv.cpuTime()
	res, err := load(ctx, srv.httpAddr, reqs, conns, rate, cfg.Duration, 0)
	if err != nil || res.Requests == 0 {
		return res, 0, err
	}
	return res, (srv.cpuTime() - before) / time.Duration(res.Requests), nil
}

// warmAndLoad runs an unmeasured warm-up, then the measured load.
func warmAndLoad(ctx context.Context, cfg config, addr string, reqs []request, conns int, rate float64) (loadResult, error) {
	if cfg.Warmup > 0 {
		if _, err := load(ctx, addr, reqs, conns, rate, cfg.Warmup, 0); err != nil {
			return loadResult{}, err
		}
	}
	return load(ctx, addr, reqs, conns, rate, cfg.Duration, 0)
}

// fanOut: ingest throughput (unpinned, closed loop) with n acking groups, then, on a fresh bridge,
// end-to-end latency at the fixed rate (pinned, open loop).
func fanOut(ctx context.Context, cfg config, dir string, n int) (tput loadResult, e2e []time.Duration, gen loadResult, err error) {
	err = withBridge(cfg, dir+"-tput", false, n, nil, func(br *server, _ *receipts) error {
		var err error
		tput, err = warmAndLoad(ctx, cfg, br.httpAddr, afterRequests(br.httpAddr, cfg.auth), cfg.Conns, 0)
		return err
	})
	if err != nil {
		return tput, nil, gen, err
	}
	err = withBridge(cfg, dir+"-e2e", cfg.Pin, n, nil, func(br *server, rec *receipts) error {
		reqs := afterRequests(br.httpAddr, cfg.auth)
		if _, err := load(ctx, br.httpAddr, reqs, cfg.OpenConns, cfg.E2ERate, cfg.Warmup, 0); err != nil {
			return err
		}
		rec.reset()
		done := profile(cfg, br, fmt.Sprintf("e2e-%d", n))
		var err error
		gen, err = load(ctx, br.httpAddr, reqs, cfg.OpenConns, cfg.E2ERate, cfg.Duration, 0)
		done()
		if err != nil {
			return err
		}
		want := int64(gen.Requests) * int64(n)
		waitFor(func() bool { return int64(len(rec.sorted())) >= want }, 10*time.Second)
		e2e = rec.sorted()
		return nil
	})
	return tput, e2e, gen, err
}

// verdictDecider is the deciding subscriber of the verdict runs; it allows at once.
var verdictDecider = &pb.Subscription{Group: "decider", Decide: true, Filter: &pb.EventFilter{Commands: []string{"callbackBeforeSetGroupInfoExCommand"}}}

func beforeRequests(addr string, a *benchAuth) []request {
	ex := examples.Must("openim-before-set-group-info-ex")
	return []request{buildRequest(addr, a.openimPath(ex.Command), a.openimHeader(), ex.Body)}
}

// verdictRoundTrip: before-callbacks at a fixed rate with one decider that allows at once.
func verdictRoundTrip(ctx context.Context, cfg config, dir string) (res loadResult, cpu time.Duration, err error) {
	err = withBridge(cfg, dir, cfg.Pin, 0, verdictDecider, func(br *server, _ *receipts) error {
		var err error
		res, cpu, err = loadServer(ctx, cfg, br, "verdict", beforeRequests(br.httpAddr, cfg.auth), cfg.OpenConns, cfg.VerdictRate)
		return err
	})
	return res, cpu, err
}

// verdictFloor is verdictRoundTrip against the floor server (floor.go), pinned alike.
func verdictFloor(ctx context.Context, cfg config) (res loadResult, cpu time.Duration, err error) {
	fl, err := startFloor(cfg.Pin)
	if err != nil {
		return res, 0, err
	}
	defer fl.stop()
	if cfg.Pin {
		undo, err := pinSelf()
		if err != nil {
			return res, 0, err
		}
		defer undo()
	}
	sub, err := subscribe(fl.grpcAddr, nil, verdictDecider, nil)
	if err != nil {
		return res, 0, err
	}
	defer sub.close()
	return loadServer(ctx, cfg, fl, "verdict-floor", beforeRequests(fl.httpAddr, nil), cfg.OpenConns, cfg.VerdictRate)
}

// backlogDrain stores cfg.Backlog events with no subscriber, then times one group draining them.
func backlogDrain(ctx context.Context, cfg config, dir string) (float64, error) {
	var rate float64
	err := withBridge(cfg, dir, false, 0, nil, func(br *server, _ *receipts) error {
		if _, err := load(ctx, br.httpAddr, afterRequests(br.httpAddr, cfg.auth), cfg.Conns, 0, time.Hour, cfg.Backlog); err != nil {
			return err
		}
		rec := &receipts{}
		defer profile(cfg, br, "backlog")()
		start := time.Now()
		sub, err := subscribe(br.grpcAddr, cfg.auth, &pb.Subscription{Group: "drain", MaxInFlight: 1024}, rec)
		if err != nil {
			return err
		}
		defer sub.close()
		if !waitFor(func() bool { return rec.received.Load() >= int64(cfg.Backlog) }, 5*time.Minute) {
			return fmt.Errorf("drained %d of %d events", rec.received.Load(), cfg.Backlog)
		}
		rate = float64(cfg.Backlog) / time.Since(start).Seconds()
		return nil
	})
	return rate, err
}

// withBridge starts a bridge with n acking groups (and a decider), pinning both sides when asked,
// runs f, and stops everything.
func withBridge(cfg config, dir string, pin bool, n int, decider *pb.Subscription, f func(*server, *receipts) error) error {
	br, err := startBridge(cfg.Bridge, dir, pin, cfg.Profile != "", cfg.auth.bridgeArgs()...)
	if err != nil {
		return err
	}
	defer br.stop()
	if pin {
		undo, err := pinSelf()
		if err != nil {
			return err
		}
		defer undo()
	}
	rec := &receipts{}
	var subs []*subscriber
	defer func() {
		for _, s := range subs {
			s.close()
		}
	}()
	for i := 0; i < n; i++ {
		s, err := subscribe(br.grpcAddr, cfg.auth, &pb.Subscription{Group: fmt.Sprintf("group%d", i)}, rec)
		if err != nil {
			return err
		}
		subs = append(subs, s)
	}
	if decider != nil {
		s, err := subscribe(br.grpcAddr, cfg.auth, decider, nil)
		if err != nil {
			return err
		}
		subs = append(subs, s)
	}
	return f(br, rec)
}

// profile starts fetching the bridge's CPU profile and execution trace for the measured run that
// begins now, when --profile asks for them, and returns a func that waits for both and then saves
// the allocation profile. Files are named after the run, in the --profile directory.
func profile(cfg config, srv *server, name string) (wait func()) {
	if cfg.Profile == "" || srv.debugAddr == "" { // the reference servers serve no profiles
		return func() {}
	}
	if err := os.MkdirAll(cfg.Profile, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return func() {}
	}
	name = strings.ReplaceAll(name, " ", "-")
	secs := max(1, int(cfg.Duration.Seconds()))
	fetch := func(path, file string) {
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/%s", srv.debugAddr, path))
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s: %s: %s", path, resp.Status, b)
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(cfg.Profile, file), b, 0o644)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { fetch(fmt.Sprintf("profile?seconds=%d", secs), name+".cpu.pprof") })
	wg.Go(func() { fetch(fmt.Sprintf("trace?seconds=%d", secs), name+".trace") })
	return func() {
		wg.Wait()
		fetch("allocs", name+".allocs.pprof")
	}
}

func waitFor(cond func() bool, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func numCPU() int { return runtime.NumCPU() }

func mb(b int64) float64         { return float64(b) / (1 << 20) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// report holds the rows of the table, and the machine facts.
type report struct {
	Machine  map[string]any `json:"machine"`
	Settings config         `json:"settings"`
	Rows     []row          `json:"results"`
}

type row struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Target   string  `json:"target,omitempty"`
	Met      bool    `json:"met"`
}

func newReport(cfg config) *report {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return &report{
		Machine: map[string]any{
			"cpus": numCPU(), "cpu_model": model, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
			"commit": gitCommit(), "time": time.Now().UTC().Format(time.RFC3339),
		},
		Settings: cfg,
	}
}

func (r *report) metric(scenario, metric string, v float64, unit, target string, met bool) {
	r.Rows = append(r.Rows, row{scenario, metric, v, unit, target, met})
}

func (r *report) load(scenario, what string, res loadResult) {
	r.metric(scenario, what, res.rate(), "req/s", "", true)
	r.metric(scenario, "p50", ms(percentile(res.Latencies, 50)), "ms", "", true)
	r.metric(scenario, "p99", ms(percentile(res.Latencies, 99)), "ms", "", true)
	r.metric(scenario, "max", ms(percentile(res.Latencies, 100)), "ms", "", true)
	r.errors(scenario, res)
}

func (r *report) latency(scenario, what string, lat []time.Duration, target string, met bool) {
	r.metric(scenario, what+": samples", float64(len(lat)), "", "", true)
	r.metric(scenario, "p50", ms(percentile(lat, 50)), "ms", "", true)
	r.metric(scenario, "p99", ms(percentile(lat, 99)), "ms", target, met)
	r.metric(scenario, "max", ms(percentile(lat, 100)), "ms", "", true)
}

// generator reports, for an open-loop run, the delays on the generator's side that its latency
// figures include: how long the generator's goroutines (readers, subscribers, deciders) waited to
// run, and, when latency counts from the send, how late requests were sent.
func (r *report) generator(scenario string, res loadResult, fromSend bool) {
	if fromSend {
		r.metric(scenario, "generator send lateness p99 (included above)", ms(percentile(res.SendLate, 99)), "ms", "", true)
	}
	r.metric(scenario, "generator goroutine run delay p99 (included above)", ms(res.SchedDelayP99), "ms", "", true)
}

func (r *report) errors(scenario string, res loadResult) {
	if res.Errors > 0 {
		r.metric(scenario, "errors (first: "+res.FirstErr+")", float64(res.Errors), "", "0", false)
	}
}

func (r *report) print(w *os.File) {
	fmt.Fprintf(w, "\nimbridge bench: %d CPUs (%s), %s, commit %s\n\n", r.Machine["cpus"], r.Machine["cpu_model"], r.Machine["go"], r.Machine["commit"])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\tvalue\tunit\ttarget\t")
	for _, row := range r.Rows {
		mark := ""
		if row.Target != "" {
			mark = "met"
			if !row.Met {
				mark = "MISSED"
			}
			mark = row.Target + " " + mark
		}
		fmt.Fprintf(tw, "%s\t%s\t%.3g\t%s\t%s\t\n", row.Scenario, row.Metric, row.Value, row.Unit, mark)
	}
	tw.Flush()
}

func (r *report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
