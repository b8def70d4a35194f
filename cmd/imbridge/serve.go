package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/imbridge/imbridge/app"
	"github.com/imbridge/imbridge/eventlog"
	"github.com/imbridge/imbridge/gateway"
	"github.com/imbridge/imbridge/internal/logbuf"
	"github.com/imbridge/imbridge/server"
)

// serveFlags are serve's settings beyond app.Config.
type serveFlags struct {
	logLevel   slog.Level
	maxStreams *uint
	logFormat  *string
	accessLog  *bool
	gogc       *int
}

// newServeFlags defines serve's flags, filling cfg and the returned settings.
func newServeFlags(cfg *app.Config) (*flag.FlagSet, *serveFlags) {
	fs := newFlagSet("serve", "[flags]")
	sf := &serveFlags{}
	fs.StringVar(&cfg.HTTPAddr, "http-addr", app.DefaultHTTPAddr, "HTTP address IM servers post callbacks to; also /healthz, /readyz, /metrics and /openapi.json")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", app.DefaultGRPCAddr, "gRPC address for subscribers, grpcurl and health checks")
	fs.StringVar(&cfg.DataDir, "data-dir", "data", "directory of the embedded event log")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS server or cluster instead of the embedded one: nats://host:4222, or several seed URLs comma-separated (README, Scaling out)")
	fs.StringVar(&cfg.Role, "role", string(server.RoleAll), "the work this instance does: all; ingest (callbacks, verdict waits and deciders, no other subscribers); deliver (subscribers, no callbacks). ingest and deliver need --nats-url (README, Scaling out)")
	fs.IntVar(&cfg.StreamReplicas, "stream-replicas", 0, "replicas of the event log's stream (and of its dead letters and buckets; groups inherit them); 0: 1 embedded, 3 on an external cluster of 3 or more servers")
	fs.StringVar(&cfg.StreamCluster, "stream-cluster", "", "JetStream placement of a new stream: the NATS cluster to put it in")
	fs.Var((*listFlag)(&cfg.StreamTags), "stream-tags", "JetStream placement of a new stream: server tags its replicas must have (comma-separated)")
	fs.BoolVar(&cfg.StreamUpdate, "stream-update", false, "update an existing external stream whose replicas, placement or retention differ from the flags (without it, the difference is only logged)")
	fs.StringVar(&cfg.ConfigFile, "config", "", "YAML file: per-command deadline, failure_policy and wait; callers and subscribers (auth)")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", gateway.DefaultMaxBodyBytes, "largest callback body accepted; lowered to what the event log can store (README, Limits)")
	fs.BoolVar(&cfg.SyncAlways, "sync-always", false, "fsync every event before answering (survives power loss, slower)")
	fs.DurationVar(&cfg.RetentionMaxAge, "retention-max-age", eventlog.DefaultMaxAge, "how long the event log keeps a record, delivered or not (README, Retention)")
	fs.DurationVar(&cfg.DedupWindow, "dedup-window", server.DefaultDedupWindow, "how long a callback with a request id (Tencent RequestID, OpenIM operationID) is remembered, to answer a retry OK without storing it again; 0: off (README, Retries)")
	fs.DurationVar(&cfg.FailoverWait, "failover-wait", server.DefaultFailoverWait, "how soon the events held by subscribers of an instance that died go to subscribers elsewhere (the log's ack wait of a group, set when it is created or next joined with no member connected); subscribers on live instances keep their events for the group's ack_wait")
	fs.DurationVar(&cfg.PublishTimeout, "publish-timeout", server.DefaultPublishTimeout, "longest wait for the event log to acknowledge a callback before its IM server is answered 503; keep it below the IM server's timeout (Tencent 2s, OpenIM 5s); a before-callback waits at most its deadline")
	fs.Var((*byteSize)(&cfg.RetentionMaxBytes), "retention-max-bytes", "most bytes the event log keeps (512MiB, 20GB; at least 64MiB); past it the oldest records go, delivered or not; 0: no limit")
	fs.StringVar(&cfg.TencentSdkAppID, "tencent-sdkappid", "", "add this Tencent app to callers.tencent.apps (callbacks for other SdkAppids are refused)")
	fs.StringVar(&cfg.TencentToken, "tencent-token", "", "Tencent callback authentication token of the --tencent-sdkappid app: check Sign and RequestTime")
	fs.StringVar(&cfg.Reflection, "reflection", "auto", "gRPC reflection: on, off, or auto (on unless subscriber tokens are configured)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate (chain) for TLS on both ports; read again on SIGHUP and when it changes")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM key of --tls-cert")
	fs.IntVar(&cfg.MaxSubscribers, "max-subscribers", server.DefaultMaxSubscribers, "most Subscribe streams served at once; one more gets RESOURCE_EXHAUSTED")
	fs.IntVar(&cfg.MaxUnackedBytes, "max-unacked-bytes", server.DefaultMaxUnackedBytes, "most bytes of events one Subscribe stream holds: a group member gets no more until it acks; a live tail that far behind is cut off (RESOURCE_EXHAUSTED)")
	sf.maxStreams = fs.Uint("max-streams-per-conn", app.DefaultMaxStreamsPerConn, "most concurrent gRPC calls on one connection")
	fs.StringVar(&cfg.ClientCA, "client-ca", "", "PEM CA certificates: subscribers may authenticate with a client certificate they signed (cert_cn)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", app.DefaultShutdownTimeout, "how long shutdown waits for callbacks in flight")
	fs.StringVar(&cfg.DebugAddr, "debug-addr", "", "serve pprof on this address (e.g. 127.0.0.1:6060); off when empty")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve /metrics on this address instead of the HTTP port (e.g. an operators-only interface)")
	sf.accessLog = fs.Bool("access-log", true, "log one line per callback at info (those not answered OK are logged at warn regardless); off is cheaper at full load (README, Operations)")
	sf.logFormat = fs.String("log-format", "text", "text (key=value) or json, one object per line")
	sf.gogc = fs.Int("gogc", 200, "GC target percent when GOGC is not set: the bridge keeps little live data and allocates per callback, so fewer collections buy CPU and tail latency for some memory")
	fs.TextVar(&sf.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	return fs, sf
}

func serve(ctx context.Context, args []string) error {
	var cfg app.Config
	fs, sf := newServeFlags(&cfg)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	maxStreams, logFormat, gogc := sf.maxStreams, sf.logFormat, sf.gogc
	if *maxStreams == 0 || *maxStreams > math.MaxUint32 {
		return fmt.Errorf("--max-streams-per-conn %d: want 1 to %d", *maxStreams, uint32(math.MaxUint32))
	}
	cfg.MaxStreamsPerConn = uint32(*maxStreams)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*gogc)
	}
	// Standard error takes the log in batches (logbuf): one write per access line would cost a
	// tenth of the ingest throughput.
	lw := logbuf.NewWriter(os.Stderr)
	defer lw.Close()
	hopts := &slog.HandlerOptions{Level: sf.logLevel}
	var h slog.Handler
	switch *logFormat {
	case "text":
		h = slog.NewTextHandler(lw, hopts)
	case "json":
		h = slog.NewJSONHandler(lw, hopts)
	default:
		return fmt.Errorf("--log-format %q: want text or json", *logFormat)
	}
	cfg.Logger = slog.New(logbuf.Handler(h, lw))
	cfg.Version = buildVersion()
	cfg.NoAccessLog = !*sf.accessLog
	return app.Run(ctx, cfg)
}
