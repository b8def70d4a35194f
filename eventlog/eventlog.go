// Package eventlog owns the durable event log: a NATS JetStream stream, served by a NATS server embedded
// in this process (file store, no network listener) or by an external NATS cluster. Both go through the
// same client code. It stores and delivers opaque messages; what they mean is the server package's business.
package eventlog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for Options fields left zero.
const (
	DefaultDataDir = "data"
	DefaultStream  = "IMBRIDGE_EVENTS"
	DefaultMaxAge  = 7 * 24 * time.Hour
	// SubjectPrefix is the root of every event subject; the stream stores SubjectPrefix + ".>".
	SubjectPrefix = "imbridge.events"
	// EmbeddedMaxPayload is the embedded server's message size limit (NATS's default is 1 MiB): the
	// size of gRPC's default message limit, so that a message the log holds can be delivered whole.
	EmbeddedMaxPayload = 4 << 20
)

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("event log closed")

// Options configures Open.
type Options struct {
	// DataDir holds the embedded server's file store. Ignored with URL. Default "data".
	DataDir string
	// URL of an external NATS server (nats://host:4222). Empty: run an embedded server in this process.
	URL string
	// Stream is the JetStream stream name. Default "IMBRIDGE_EVENTS".
	Stream string
	// MaxAge is how long events are kept. Default 7 days.
	MaxAge time.Duration
	// MaxBytes caps the stream size; the oldest events are dropped past it. 0: no cap.
	MaxBytes int64
	// DuplicateWindow is how long the stream remembers a message id (Nats-Msg-Id) to drop a
	// message written again with it. 0: JetStream's default, 2 minutes. At most MaxAge.
	DuplicateWindow time.Duration
	// Replicas of the stream, its dead letters and bucket; consumer groups inherit them. 0: 1 on
	// the embedded server, 3 on an external one that is a cluster of 3 or more servers, else 1.
	// The embedded server is one node: more than 1 is an error there.
	Replicas int
	// PlacementCluster and PlacementTags place a new stream (JetStream placement); empty: anywhere.
	PlacementCluster string
	PlacementTags    []string
	// UpdateStream applies Replicas, placement and retention to an existing stream on an external
	// server whose settings differ; without it they are only reported.
	UpdateStream bool
	// SyncAlways makes the embedded server fsync every write before acknowledging it, so an event
	// survives power loss, not only a crash of this process. Slower.
	SyncAlways bool
	// Logger receives the embedded server's notices and warnings. Default slog.Default().
	Logger *slog.Logger
}

// Log is an open event log.
type Log struct {
	opts Options
	lock *os.File           // the data dir's lock, held while the embedded server runs; nil with an external server
	ns   *natsserver.Server // nil with an external server
	nc   *nats.Conn
	js   jetstream.JetStream
	// ac is the answer path's connection (publishes, and the verdicts, presence and deciders'
	// deliveries of server/): apart from nc, which carries every other group's deliveries and acks,
	// so that a publish acknowledgement or a decider's event does not queue behind them. ajs
	// publishes on it.
	ac     *nats.Conn
	ajs    jetstream.JetStream
	stream jetstream.Stream
	// dead and redelivery are the stores beside the stream (deadletters.go).
	dead       jetstream.Stream
	redelivery jetstream.KeyValue
	groups     jetstream.KeyValue
	room       room               // room.go
	storeDir   string             // the embedded server's, absolute
	stopWatch  context.CancelFunc // ends the embedded server's watchdog (room.go); nil with an external one
	// electingSince is when readiness first found the cluster without a leader; zero while it has
	// one (cluster.go).
	electingMu    sync.Mutex
	electingSince time.Time
}

// Open starts (or connects to) the NATS server and makes sure the stream exists with the configured
// limits. The caller must Close the log.
func Open(ctx context.Context, opts Options) (*Log, error) {
	if opts.DataDir == "" {
		opts.DataDir = DefaultDataDir
	}
	if opts.Stream == "" {
		opts.Stream = DefaultStream
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	l := &Log{opts: opts}
	logger := opts.Logger.With("component", "nats")
	connOpts := []nats.Option{
		nats.Name("imbridge"),
		// Asynchronous errors are the only word of a permission the bridge lacks (an ack refused, a
		// verdict not delivered) or of a subscriber the connection could not keep up with.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				logger.Error("nats error", "subject", sub.Subject, "err", err)
			} else {
				logger.Error("nats error", "err", err)
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed by this process
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	url := opts.URL
	if url == "" {
		lock, err := lockDataDir(opts.DataDir)
		if err != nil {
			return nil, err
		}
		l.lock = lock
		dir, err := filepath.Abs(opts.DataDir)
		if err != nil {
			l.unlock()
			return nil, fmt.Errorf("data dir: %w", err)
		}
		ns, err := startEmbedded(dir, opts)
		if err != nil {
			l.unlock()
			return nil, err
		}
		l.ns, l.storeDir = ns, dir
		connOpts = append(connOpts, nats.InProcessServer(ns))
	} else {
		connOpts = append(connOpts, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(false))
	}
	nc, err := nats.Connect(url, connOpts...)
	if err != nil {
		l.shutdownServer()
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	l.nc = nc
	l.js, err = jetstream.New(nc)
	if err == nil {
		l.ac, err = nats.Connect(url, append(connOpts, nats.Name("imbridge answers"))...)
	}
	if err == nil {
		l.ajs, err = jetstream.New(l.ac)
	}
	if err != nil {
		l.closeConn()
		l.shutdownServer()
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	replicas, err := streamReplicas(opts, l.ns != nil, nc)
	if err != nil {
		l.closeConn()
		l.shutdownServer()
		return nil, err
	}
	cfg := jetstream.StreamConfig{
		Name:        opts.Stream,
		Description: "imbridge: IM server callbacks, one message per event",
		Subjects:    []string{SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      opts.MaxAge,
		MaxBytes:    orUnlimited(opts.MaxBytes),
		Duplicates:  min(cmp.Or(opts.DuplicateWindow, 2*time.Minute), opts.MaxAge), // at most MaxAge, as JetStream requires
		Replicas:    replicas,
	}
	if opts.PlacementCluster != "" || len(opts.PlacementTags) > 0 {
		cfg.Placement = &jetstream.Placement{Cluster: opts.PlacementCluster, Tags: opts.PlacementTags}
	}
	if l.ns != nil {
		// The embedded server is ours: its stream follows the options.
		l.stream, err = l.js.CreateOrUpdateStream(ctx, cfg)
	} else {
		// An external cluster's stream may have been set up by its operators (replicas, limits):
		// create it if missing, rewrite it only when asked. The first replicated stream of a new
		// cluster may time out while its peers elect a leader: tried again until ctx ends.
		err = retryElection(ctx, func(ctx context.Context) error {
			var err error
			l.stream, err = l.js.Stream(ctx, opts.Stream)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				l.stream, err = l.js.CreateStream(ctx, cfg)
			}
			return err
		})
		if err == nil && !slices.Contains(l.stream.CachedInfo().Config.Subjects, SubjectPrefix+".>") {
			err = fmt.Errorf("stream %s exists but does not take %s.>", opts.Stream, SubjectPrefix)
		}
		if err == nil {
			err = l.reconcile(ctx, cfg)
		}
	}
	if err != nil {
		l.closeConn()
		l.shutdownServer()
		return nil, fmt.Errorf("stream %s: %w", opts.Stream, err)
	}
	if err := l.openStores(ctx, l.stream.CachedInfo().Config.Replicas); err != nil {
		l.closeConn()
		l.shutdownServer()
		return nil, err
	}
	if l.ns != nil {
		var watchCtx context.Context
		watchCtx, l.stopWatch = context.WithCancel(context.Background())
		go l.watch(watchCtx)
	}
	info := l.stream.CachedInfo()
	where := []any{"nats", nc.ConnectedUrlRedacted()}
	if l.ns != nil {
		where = []any{"nats", "embedded", "data_dir", opts.DataDir}
	}
	opts.Logger.Info("event log open", append(where,
		"stream", info.Config.Name, "storage", info.Config.Storage.String(), "replicas", info.Config.Replicas,
		"max_age", info.Config.MaxAge, "max_bytes", info.Config.MaxBytes, "max_message_bytes", l.MaxMessageBytes(),
		"records", info.State.Msgs, "bytes", info.State.Bytes)...)
	return l, nil
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

func startEmbedded(dir string, opts Options) (*natsserver.Server, error) {
	ns, err := natsserver.NewServer(&natsserver.Options{
		ServerName:             "imbridge-embedded",
		MaxPayload:             EmbeddedMaxPayload,
		JetStream:              true,
		StoreDir:               dir,
		DontListen:             true, // reachable only through this process's in-process connection
		NoSigs:                 true,
		SyncAlways:             opts.SyncAlways,
		DisableJetStreamBanner: true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.SetLoggerV2(&natsLogger{log: opts.Logger.With("component", "nats")}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats: not ready after 30s")
	}
	return ns, nil
}

// Publish stores one message and returns its stream sequence once the log has acknowledged it:
// from then on the message survives a crash of this process. It waits until ctx ends, retrying
// while no stream answers.
func (l *Log) Publish(ctx context.Context, msg *nats.Msg) (uint64, error) {
	if err := l.refuse(); err != nil {
		return 0, err
	}
	// A publish that finds no stream to take it (its leader is being elected, or the embedded
	// JetStream restarts) was not stored: it is sent again until ctx ends. The client already
	// tries again 250 ms later before giving up (ErrNoStreamResponse), which paces this loop. (Not
	// with its retry options: any option gives every message a header, a cost on every record.)
	ack, err := l.ajs.PublishMsg(ctx, msg)
	for errors.Is(err, jetstream.ErrNoStreamResponse) && ctx.Err() == nil {
		ack, err = l.ajs.PublishMsg(ctx, msg)
	}
	if err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return 0, ErrClosed
		}
		return 0, fmt.Errorf("publish %s: %w", msg.Subject, l.noteWrite(err))
	}
	l.noteWrite(nil)
	return ack.Sequence, nil
}

// MaxMessageBytes is the largest message, headers included, the log takes: the server's
// max_payload, or the stream's own max_msg_size where that is lower (a stream set up by an
// operator may have one).
func (l *Log) MaxMessageBytes() int64 {
	n := l.nc.MaxPayload()
	if m := int64(l.stream.CachedInfo().Config.MaxMsgSize); m > 0 {
		n = min(n, m)
	}
	return n
}

// Conn is the NATS connection of consumers and their acks, and of requests beside the stream.
func (l *Log) Conn() *nats.Conn { return l.nc }

// AnswerConn is the NATS connection of the answer path: the log's publishes, and traffic an IM
// server's answer waits on (verdicts, and the deliveries and acks of decider groups). Other
// deliveries do not share it.
func (l *Log) AnswerConn() *nats.Conn { return l.ac }

// JetStream is the JetStream context, for consumers.
func (l *Log) JetStream() jetstream.JetStream { return l.js }

// Stream is the name of the event stream.
func (l *Log) Stream() string { return l.opts.Stream }

// readyInfoTimeout bounds readiness's stream info request, and readyFlushTimeout the round trip to
// this instance's own NATS server that tells a cluster not answering from a node cut off; together
// within the 2 s a readiness probe waits (gateway).
const (
	readyInfoTimeout  = 1500 * time.Millisecond
	readyFlushTimeout = 300 * time.Millisecond
)

// Ready reports whether the log can take writes: the connection is up and the stream answers. A
// cluster that cannot answer for now (electing a leader) is a *LogElecting: that is not this
// instance's fault.
func (l *Log) Ready(ctx context.Context) error {
	for _, nc := range []*nats.Conn{l.ac, l.nc} {
		if !nc.IsConnected() {
			return fmt.Errorf("nats: %s", nc.Status())
		}
	}
	ictx, cancel := context.WithTimeout(ctx, readyInfoTimeout)
	_, err := l.stream.Info(ictx)
	cancel()
	if err != nil {
		electing := leaderless(err)
		if !electing && ictx.Err() != nil && ctx.Err() == nil {
			// No answer in time: a request to a leader that just died gets none. It is the
			// cluster's state if this instance's own node still answers (bounded by maxElecting,
			// after which an instance cut off with a minority is drained).
			electing = l.nc.FlushTimeout(readyFlushTimeout) == nil
		}
		if l.ns == nil && l.electingFor(electing) {
			return &LogElecting{err: fmt.Errorf("stream info: %w", err)}
		}
		return fmt.Errorf("stream info: %w", err)
	}
	l.electingFor(false)
	return l.roomError(ctx)
}

// Close flushes and closes the connection, then stops the embedded server, within ctx.
func (l *Log) Close(ctx context.Context) error {
	if l.stopWatch != nil {
		l.stopWatch()
	}
	l.closeConn()
	if l.ns == nil {
		return nil
	}
	done := make(chan struct{})
	go func() {
		l.ns.Shutdown()
		l.ns.WaitForShutdown()
		l.unlock() // only once the store is closed
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("embedded nats shutdown: %w", ctx.Err())
	}
}

func (l *Log) closeConn() {
	for _, nc := range []*nats.Conn{l.ac, l.nc} {
		if nc != nil && !nc.IsClosed() {
			_ = nc.FlushTimeout(time.Second)
			nc.Close()
		}
	}
}

func (l *Log) shutdownServer() {
	if l.ns != nil {
		l.ns.Shutdown()
		l.ns.WaitForShutdown()
	}
	l.unlock()
}

// natsLogger routes the embedded server's log lines to slog.
type natsLogger struct{ log *slog.Logger }

func (n *natsLogger) Noticef(format string, v ...any) { n.log.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.log.Warn(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Fatalf(format string, v ...any)  { n.log.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Errorf(format string, v ...any)  { n.log.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Debugf(format string, v ...any)  { n.log.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Tracef(format string, v ...any)  {}
