// Package app runs one imbridge process: it opens the event log, builds the gRPC server (callback
// services, EventService, health, reflection) and the HTTP gateway, serves both, and shuts them down
// in order. It owns the process lifecycle and nothing else.
package app

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/imbridge/imbridge/auth"
	"github.com/imbridge/imbridge/eventlog"
	"github.com/imbridge/imbridge/gateway"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/gen/openapiv2"
	"github.com/imbridge/imbridge/server"
)

// Defaults for Config fields left zero.
const (
	DefaultHTTPAddr        = ":8080"
	DefaultGRPCAddr        = ":9090"
	DefaultShutdownTimeout = 15 * time.Second
	// DefaultMaxStreamsPerConn is HTTP/2's recommended least (RFC 9113, 6.5.2).
	DefaultMaxStreamsPerConn = 100

	subscriberCloseTimeout = 3 * time.Second

	keepaliveTime    = time.Minute
	keepaliveTimeout = 20 * time.Second
)

// MinRetentionBytes is the smallest --retention-max-bytes: room for a few of the largest records.
const MinRetentionBytes = 64 << 20

// Config is everything `imbridge serve` can be told.
type Config struct {
	HTTPAddr string // callbacks, /healthz, /readyz; default ":8080"
	GRPCAddr string // EventService, callback services, health, reflection; default ":9090"
	DataDir  string // embedded event log; default "data"
	NATSURL  string // external NATS instead of the embedded server
	// Role: server.Options.Role, as --role reads; "": all. Other roles need NATSURL.
	Role string
	// ConfigFile is the YAML file of per-command policies and who may call (File); empty: defaults,
	// and no authentication.
	ConfigFile   string
	MaxBodyBytes int64
	SyncAlways   bool
	// RetentionMaxAge and RetentionMaxBytes bound the event log (eventlog.Options.MaxAge and
	// MaxBytes): past either, the oldest records are removed, delivered or not.
	RetentionMaxAge   time.Duration
	RetentionMaxBytes int64
	// DedupWindow is how long a callback is remembered to answer its retries without storing them
	// again (server.Options.DedupWindow, and the stream's duplicate window); 0: off.
	DedupWindow time.Duration
	// StreamReplicas, StreamCluster, StreamTags and StreamUpdate: eventlog.Options.Replicas,
	// PlacementCluster, PlacementTags and UpdateStream.
	StreamReplicas int
	StreamCluster  string
	StreamTags     []string
	StreamUpdate   bool
	// PublishTimeout bounds the wait for the log to acknowledge a callback's event
	// (server.Options.PublishTimeout); 0: server.DefaultPublishTimeout.
	PublishTimeout time.Duration
	// FailoverWait: server.Options.FailoverWait; 0: server.DefaultFailoverWait.
	FailoverWait time.Duration
	// TencentSdkAppID and TencentToken add one Tencent app to the file's (a shorthand for
	// callers.tencent.apps); a token needs its app.
	TencentSdkAppID string
	TencentToken    string
	// Reflection serves gRPC reflection: "on", "off", or "" for on unless subscriber tokens are
	// configured (reflection describes every service to whoever asks).
	Reflection string
	// TLSCert and TLSKey (PEM files) turn on TLS on both listeners; the files are read again on
	// SIGHUP and when they change. ClientCA (PEM) lets subscribers authenticate with a client
	// certificate on the gRPC port (auth.Subscriber.CertCN).
	TLSCert, TLSKey, ClientCA string
	// MaxSubscribers bounds the Subscribe streams served at once; default server.DefaultMaxSubscribers.
	MaxSubscribers int
	// MaxUnackedBytes bounds what one Subscribe stream holds; default server.DefaultMaxUnackedBytes.
	MaxUnackedBytes int
	// NoAccessLog turns off the access line per callback.
	NoAccessLog bool
	// MaxStreamsPerConn bounds the concurrent gRPC calls on one connection; default
	// DefaultMaxStreamsPerConn.
	MaxStreamsPerConn uint32
	ShutdownTimeout   time.Duration
	// DebugAddr, if set, serves net/http/pprof there (keep it on loopback).
	DebugAddr string
	// MetricsAddr, if set, serves /metrics there instead of on the HTTP port.
	MetricsAddr string
	// Version is what the startup line and /healthz report.
	Version string
	Logger  *slog.Logger
	// OnListening, if set, is called with the bound addresses once both listeners are open.
	OnListening func(httpAddr, grpcAddr net.Addr)
}

// Run serves until ctx ends, then shuts down: health NOT_SERVING, HTTP stops taking callbacks and
// finishes those in flight, subscriber streams end (their unacked events go back to their groups),
// the gRPC server stops, and last the event log closes.
func Run(ctx context.Context, cfg Config) error {
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = DefaultHTTPAddr
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = DefaultGRPCAddr
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.RetentionMaxBytes < 0 || cfg.RetentionMaxBytes > 0 && cfg.RetentionMaxBytes < MinRetentionBytes {
		return fmt.Errorf("--retention-max-bytes %d: at least %d (64MiB), or 0 for no limit: a smaller log would drop callbacks as soon as they are answered", cfg.RetentionMaxBytes, MinRetentionBytes)
	}
	if cfg.RetentionMaxAge < 0 || cfg.RetentionMaxAge > 0 && cfg.RetentionMaxAge < time.Minute {
		return fmt.Errorf("--retention-max-age %v: at least 1m", cfg.RetentionMaxAge)
	}
	if cfg.PublishTimeout < 0 || cfg.PublishTimeout > 0 && (cfg.PublishTimeout < 10*time.Millisecond || cfg.PublishTimeout > server.MaxDeadline) {
		return fmt.Errorf("--publish-timeout %v: want 10ms to %v, below the IM server's own timeout (Tencent 2s, OpenIM 5s)", cfg.PublishTimeout, server.MaxDeadline)
	}
	if cfg.FailoverWait < 0 || cfg.FailoverWait > 0 && (cfg.FailoverWait < server.MinAckWait || cfg.FailoverWait > time.Minute) {
		return fmt.Errorf("--failover-wait %v: want %v to 1m", cfg.FailoverWait, server.MinAckWait)
	}
	role, err := server.ParseRole(cfg.Role)
	if err != nil {
		return fmt.Errorf("--%w", err)
	}
	if role != server.RoleAll && cfg.NATSURL == "" {
		return fmt.Errorf("--role %s needs --nats-url: the embedded event log is reachable from this process alone, so no instance with another role could share it", role)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	logger := cfg.Logger
	logger.Info("imbridge starting", "version", cfg.Version, "go", runtime.Version(), "role", role)

	file := &File{}
	if cfg.ConfigFile != "" {
		f, err := LoadFile(cfg.ConfigFile)
		if err != nil {
			return err
		}
		for _, cmd := range f.UnknownCommands() {
			logger.Warn("policy for a command no IM server is known to send: if it is a typo, that command takes the default policy",
				"command", cmd, "file", cfg.ConfigFile)
		}
		file = f
		logger.Info("config loaded", "file", cfg.ConfigFile, "policies", len(f.Policies.Commands))
	}
	rules, err := authRules(cfg, file.Auth)
	if err != nil {
		return err
	}
	logger.Info("auth", rules.Summary()...)
	for _, door := range rules.Open() {
		logger.Warn("OPEN: no authentication configured for "+door, "see", "README, Security")
	}
	withReflection, err := reflectionOn(cfg.Reflection, rules)
	if err != nil {
		return err
	}
	tlsFiles, httpTLS, grpcTLS, err := serverTLS(cfg, rules)
	if err != nil {
		return err
	}

	// The ports first: a process that cannot serve must not touch the event log's store.
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	defer httpLis.Close() // the servers close them too; this covers a failure before they start
	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	defer grpcLis.Close()

	// A new NATS cluster may take a while to elect the leaders of a replicated stream.
	octx, ocancel := context.WithTimeout(ctx, openTimeout)
	log, err := eventlog.Open(octx, eventlog.Options{
		DataDir: cfg.DataDir, URL: cfg.NATSURL, SyncAlways: cfg.SyncAlways, Logger: logger,
		MaxAge: cfg.RetentionMaxAge, MaxBytes: cfg.RetentionMaxBytes, DuplicateWindow: max(cfg.DedupWindow, 0),
		Replicas: cfg.StreamReplicas, PlacementCluster: cfg.StreamCluster, PlacementTags: cfg.StreamTags, UpdateStream: cfg.StreamUpdate,
	})
	ocancel()
	if err != nil {
		return fmt.Errorf("open event log: %w", err)
	}
	closeCtx := context.WithoutCancel(ctx)
	defer func() {
		lctx, cancel := context.WithTimeout(closeCtx, cfg.ShutdownTimeout)
		defer cancel()
		if err := log.Close(lctx); err != nil {
			logger.Error("close event log", "err", err)
		}
	}()

	tracer, stopTracing, err := newTracer(ctx, cfg.Version)
	if err != nil {
		return err
	}
	if tracer != nil {
		logger.Info("tracing on: OTLP", "endpoint", cmp.Or(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")))
		defer func() {
			tctx, cancel := context.WithTimeout(closeCtx, 5*time.Second)
			defer cancel()
			if err := stopTracing(tctx); err != nil {
				logger.Warn("traces not all exported at shutdown", "err", err)
			}
		}()
	}
	reg := prometheus.NewRegistry()
	grpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), grpcMetrics)
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	srv, err := server.New(server.Options{
		Role: role, Log: log, Policies: &file.Policies, Logger: logger, Registerer: reg,
		MaxSubscribers: cfg.MaxSubscribers, MaxUnackedBytes: cfg.MaxUnackedBytes, NoAccessLog: cfg.NoAccessLog,
		DedupWindow: dedupWindow(cfg.DedupWindow), PublishTimeout: cfg.PublishTimeout,
		FailoverWait: cfg.FailoverWait, Tracer: tracer,
	})
	if err != nil {
		return err
	}
	// Every body accepted must be storable: the event log's message limit bounds the body limit.
	maxBody := cmp.Or(cfg.MaxBodyBytes, gateway.DefaultMaxBodyBytes)
	// net/http reads up to 4 KiB past MaxHeaderBytes.
	if fit := srv.MaxBodyBytes(gateway.MaxHeaderBytes + 4<<10); maxBody > fit {
		logger.Warn("body limit lowered to what the event log can store: raise the NATS server's max_payload (4MB) to accept larger bodies",
			"max_body_bytes", fit, "asked", maxBody, "log_max_message_bytes", log.MaxMessageBytes())
		maxBody = fit
	}
	gwOpts := gateway.Options{
		OpenIM:       srv.OpenIM(),
		Tencent:      srv.Tencent(),
		Ready:        srv.Ready,
		Metrics:      metricsHandler,
		OpenAPI:      openapiv2.JSON,
		MaxBodyBytes: maxBody,
		Auth:         rules,
		Record:       srv.Record,
		Tracer:       tracer,
		Version:      cfg.Version,
		Logger:       logger,
	}
	if cfg.MetricsAddr != "" {
		gwOpts.Metrics = nil
	}
	gw, err := gateway.New(ctx, gwOpts)
	if err != nil {
		return err
	}

	grpcOpts := append(server.GRPCServerOptions(),
		// Metrics first, so that refused calls are counted too.
		grpc.ChainUnaryInterceptor(grpcMetrics.UnaryServerInterceptor(), srv.CallbackInterceptor(), rules.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor(), rules.StreamInterceptor()),
		grpc.MaxConcurrentStreams(cmp.Or(cfg.MaxStreamsPerConn, DefaultMaxStreamsPerConn)),
		// A peer gone without closing its connection (a subscriber's host died) is found within
		// keepaliveTime + keepaliveTimeout, and its streams end.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
	)
	if grpcTLS != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(grpcTLS)))
	}
	gs := grpc.NewServer(grpcOpts...)
	srv.Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	// Per service, for a load balancer's checks: what this instance's role serves.
	for svc, serving := range servedBy(role) {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if serving {
			st = healthpb.HealthCheckResponse_SERVING
		}
		hs.SetServingStatus(svc, st)
	}
	if withReflection {
		reflection.Register(gs)
	}
	grpcMetrics.InitializeMetrics(gs)

	hsrv := &http.Server{
		Handler:           gw,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    gateway.MaxHeaderBytes,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig:         httpTLS,
	}

	if cfg.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metricsHandler)
		stop, err := serveAux("metrics", cfg.MetricsAddr, mux, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	if cfg.DebugAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		stop, err := serveAux("debug", cfg.DebugAddr, mux, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	var hup chan os.Signal
	if tlsFiles != nil {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP) // before the listening lines: a SIGHUP from then on reloads
		defer signal.Stop(hup)
	}
	logger.Info("http listening", "addr", httpLis.Addr().String())
	logger.Info("grpc listening", "addr", grpcLis.Addr().String())
	if cfg.OnListening != nil {
		cfg.OnListening(httpLis.Addr(), grpcLis.Addr())
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		serve := func() error { return hsrv.Serve(httpLis) }
		if httpTLS != nil {
			serve = func() error { return hsrv.ServeTLS(httpLis, "", "") } // certificates from TLSConfig
		}
		if err := serve(); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	if tlsFiles != nil {
		g.Go(func() error { reloadCerts(gctx, tlsFiles, hup, logger); return nil })
	}
	g.Go(func() error {
		if err := gs.Serve(grpcLis); err != nil {
			return fmt.Errorf("grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		logger.Info("shutting down")
		sctx, cancel := context.WithTimeout(closeCtx, cfg.ShutdownTimeout)
		defer cancel()
		hs.Shutdown() // health: NOT_SERVING
		if err := hsrv.Shutdown(sctx); err != nil {
			logger.Warn("http shutdown", "err", err)
		}
		// Subscriber streams end promptly unless a subscriber stopped reading (a blocked Send);
		// then Stop cuts them off rather than spending the whole budget.
		cctx, ccancel := context.WithTimeout(sctx, subscriberCloseTimeout)
		err := srv.Close(cctx)
		ccancel()
		if err != nil {
			logger.Warn("subscribers did not end; stopping the gRPC server", "err", err)
			gs.Stop()
			srv.Stop()
			return nil
		}
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-sctx.Done():
			gs.Stop()
		}
		srv.Stop() // no callback can arrive any more
		return nil
	})
	return g.Wait()
}

// servedBy tells, for each of the bridge's gRPC services, whether an instance with role serves it
// (the others answer with an error only; an ingest instance's EventService serves deciders alone,
// and says not serving, so that a subscribers' pool skips it).
func servedBy(role server.Role) map[string]bool {
	return map[string]bool{
		pb.OpenIMCallbackService_ServiceDesc.ServiceName:  role.Ingests(),
		pb.TencentCallbackService_ServiceDesc.ServiceName: role.Ingests(),
		pb.EventService_ServiceDesc.ServiceName:           role.Delivers(),
		pb.AdminService_ServiceDesc.ServiceName:           true,
	}
}

// authRules are the file's auth settings with the Tencent shorthand flags added.
func authRules(cfg Config, c auth.Config) (*auth.Rules, error) {
	switch {
	case cfg.TencentSdkAppID != "":
		c.Callers.Tencent.Apps = append(c.Callers.Tencent.Apps, auth.TencentApp{SdkAppID: cfg.TencentSdkAppID, Token: cfg.TencentToken})
	case cfg.TencentToken != "":
		return nil, errors.New("--tencent-token needs --tencent-sdkappid: a token belongs to an app")
	}
	rules, err := auth.New(c)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return rules, nil
}

func reflectionOn(mode string, rules *auth.Rules) (bool, error) {
	switch mode {
	case "on":
		return true, nil
	case "off":
		return false, nil
	case "", "auto":
		return !rules.SubscribersConfigured(), nil
	}
	return false, fmt.Errorf("--reflection %q: want on, off or auto", mode)
}

// serverTLS reads the TLS settings: the HTTP listener's and the gRPC listener's configurations
// (nil without TLS) and the certificate files they serve.
func serverTLS(cfg Config, rules *auth.Rules) (*auth.CertFiles, *tls.Config, *tls.Config, error) {
	if cfg.TLSCert == "" || cfg.TLSKey == "" {
		switch {
		case cfg.TLSCert != "" || cfg.TLSKey != "":
			return nil, nil, nil, errors.New("--tls-cert and --tls-key go together")
		case cfg.ClientCA != "":
			return nil, nil, nil, errors.New("--client-ca needs TLS (--tls-cert, --tls-key)")
		case rules.CertSubscribers():
			return nil, nil, nil, errors.New("subscribers with cert_cn need TLS and --client-ca")
		}
		return nil, nil, nil, nil
	}
	files, err := auth.LoadCert(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, nil, nil, err
	}
	var pool *x509.CertPool
	if cfg.ClientCA != "" {
		if pool, err = auth.LoadCertPool(cfg.ClientCA); err != nil {
			return nil, nil, nil, err
		}
	} else if rules.CertSubscribers() {
		return nil, nil, nil, errors.New("subscribers with cert_cn need --client-ca")
	}
	// IM servers are not asked for certificates: only the gRPC port takes client certificates.
	return files, auth.ServerTLS(files, nil), auth.ServerTLS(files, pool), nil
}

// certCheckInterval is how often the certificate files are looked at for a change.
const certCheckInterval = 10 * time.Second

// reloadCerts reads the certificate files again on SIGHUP (hup) and when they change, until ctx
// ends.
func reloadCerts(ctx context.Context, files *auth.CertFiles, hup <-chan os.Signal, logger *slog.Logger) {
	tick := time.NewTicker(certCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-tick.C:
		}
		switch changed, err := files.Reload(); {
		case err != nil:
			logger.Error("tls certificate not reloaded: the one in use stays", "err", err)
		case changed:
			logger.Info("tls certificate reloaded")
		}
	}
}

// serveAux serves an operators' listener (metrics, pprof) beside the two ports until stop.
func serveAux(name, addr string, h http.Handler, logger *slog.Logger) (stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listen: %w", name, err)
	}
	// No write timeout: a CPU profile or trace takes as long as asked.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() { _ = srv.Serve(lis) }()
	logger.Info(name+" listening", "addr", lis.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// openTimeout bounds opening the event log, which waits for a new cluster's elections.
const openTimeout = 2 * time.Minute

// dedupWindow is Config.DedupWindow as server.Options takes it: off is negative there.
func dedupWindow(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
