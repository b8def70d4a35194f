// Package server holds imbridge's gRPC services: the OpenIM and Tencent callback services, which turn
// each callback into a canonical Event, store it in the event log and answer in the vendor's format,
// and the EventService, which streams stored events to subscribers and takes their acks and verdicts.
// It speaks gRPC only; HTTP, vendor error bodies on the wire and process lifecycle are not its business.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/imbridge/imbridge/eventlog"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"

	"github.com/nats-io/nuid"
)

// Subscriber defaults.
const (
	DefaultAckWait = 30 * time.Second
	// MinAckWait bounds Subscription.ack_wait from below: shorter, a record would be delivered
	// again before its event has crossed the network.
	MinAckWait         = 100 * time.Millisecond
	DefaultMaxInFlight = 256
	// DefaultPublishTimeout is Options.PublishTimeout's default: below Tencent's 2 s wait for an
	// answer (OpenIM waits 5 s), with room to write the answer.
	DefaultPublishTimeout = 1500 * time.Millisecond
	// DefaultFailoverWait is Options.FailoverWait's default: within it of an instance's loss, the
	// events its subscribers held go to members on live instances.
	DefaultFailoverWait = 5 * time.Second
	// DefaultDedupWindow is Options.DedupWindow's default: JetStream's default duplicate window.
	DefaultDedupWindow = 2 * time.Minute
	// DefaultMaxDeliveries is a new group's Subscription.max_deliveries.
	DefaultMaxDeliveries = 10
	// MaxDeliveries bounds Subscription.max_deliveries.
	MaxDeliveries         = 1000
	DefaultMaxSubscribers = 1000
	// DefaultMaxUnackedBytes bounds what one Subscribe stream holds (Options.MaxUnackedBytes).
	DefaultMaxUnackedBytes = 1 << 20
)

// An event is stored as one message of the event log and delivered as one gRPC message. gRPC
// clients refuse a message over 4 MiB unless told otherwise, so no event is stored that is larger,
// whatever the log would take.
const (
	// MaxDeliveredEventBytes is gRPC's default message limit less room for the SubscribeResponse
	// around the event.
	MaxDeliveredEventBytes = 4<<20 - 1<<10
	// logHeaderRoom is kept free in a log message for its NATS headers (verdict subject, record count).
	logHeaderRoom = 1 << 10
	// eventFixedRoom bounds what an event holds besides its body, decoded fields and request
	// metadata: id, times, enums, command, field tags.
	eventFixedRoom = 1 << 10
)

// Options configures New.
type Options struct {
	// Log is the event log. Required.
	Log *eventlog.Log
	// Role is the work this instance does (role.go). "": RoleAll.
	Role Role
	// Policies are the per-command verdict settings. Nil: defaults for every command.
	Policies *Policies
	// Logger for subscriber and verdict events. Default slog.Default().
	Logger *slog.Logger
	// Registerer takes the server's Prometheus metrics. Nil: they are not exported.
	Registerer prometheus.Registerer
	// MaxSubscribers bounds the Subscribe streams served at once (each holds its unacked events);
	// one more gets ResourceExhausted. Default DefaultMaxSubscribers.
	MaxSubscribers int
	// MaxUnackedBytes bounds the memory one Subscribe stream holds, in stored bytes: a group
	// member is sent no more events while its unacked ones take that much (a pull may pass it by
	// one log message at most); a live tail, which acks nothing, is cut off with ResourceExhausted
	// once its events waiting to be sent take that much. Default DefaultMaxUnackedBytes.
	MaxUnackedBytes int
	// NoAccessLog turns off the access line per callback (Record still counts it).
	NoAccessLog bool
	// Tracer traces callbacks and deliveries (trace.go). Nil: tracing is off.
	Tracer trace.Tracer
	// DedupWindow is how long this instance remembers a callback it stored, to answer a retry of it
	// without storing it again (dedup.go). 0: DefaultDedupWindow; negative: off.
	DedupWindow time.Duration
	// PublishTimeout bounds how long a callback waits for the log to acknowledge its event before
	// its IM server is answered 503 (a before-callback waits at most its deadline). 0:
	// DefaultPublishTimeout.
	PublishTimeout time.Duration
	// FailoverWait is the log's ack wait for groups created from now on (when their ack_wait is
	// longer): how soon, after an instance is lost, the events its members held are delivered to
	// members elsewhere. The bridge tells the log that held events are being worked on until the
	// group's own ack_wait passes (inflight.go). 0: DefaultFailoverWait.
	FailoverWait time.Duration
}

// Server implements the EventService and, through OpenIM() and Tencent(), the callback services.
type Server struct {
	pb.UnimplementedEventServiceServer

	role      Role
	log       *eventlog.Log
	policies  *policySet
	logger    *slog.Logger
	verdicts  *verdictRouter
	deciders  *deciders
	presence  *presence   // which groups have members on other instances (presence.go)
	tails     *tailHub    // this instance's live tails (tailhub.go)
	started   time.Time   // when New made it
	groups    *groupStore // the groups' records (groupstate.go)
	committer *committer
	dedup     *dedupTable // nil: off
	metrics   *metrics
	// maxEventBytes is the largest encoded event stored: one log message, one gRPC message.
	maxEventBytes int

	groupsMu     sync.Mutex     // serializes joining groups, so that settings are checked and set at once
	groupMembers map[string]int // members connected here, by group; guarded by groupsMu
	// ordered holds the readers of ordered groups with members here, and orderedStopped, of those
	// stopping, when each will have stopped (ordered.go); guarded by groupsMu.
	ordered        map[string]*orderedGroup
	orderedStopped map[string]chan struct{}

	// stop ends every subscriber stream at shutdown, so that GracefulStop does not wait on them.
	stopCtx context.Context
	stop    context.CancelFunc
	closeMu sync.Mutex
	closing bool // no new subscriber once set; guarded by closeMu
	nsubs   int  // subscribers connected; guarded by closeMu
	maxSubs int
	subs    sync.WaitGroup
	// maxUnackedBytes is Options.MaxUnackedBytes.
	maxUnackedBytes int
	publishTimeout  time.Duration // Options.PublishTimeout
	failoverWait    time.Duration // Options.FailoverWait
	accessLog       bool
	tracer          trace.Tracer // nil: off
}

var _ pb.EventServiceServer = (*Server)(nil)

// New builds a Server on an open event log.
func New(opts Options) (*Server, error) {
	if opts.Log == nil {
		return nil, errors.New("server: Options.Log is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxSubscribers < 0 || opts.MaxUnackedBytes < 0 {
		return nil, fmt.Errorf("server: MaxSubscribers %d and MaxUnackedBytes %d: want positive (0: the default)", opts.MaxSubscribers, opts.MaxUnackedBytes)
	}
	role, err := ParseRole(string(opts.Role))
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	pols, err := opts.Policies.resolve()
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	mets, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(newLogCollector(opts.Log)); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	instance := nuid.Next() // names this instance on NATS (verdicts, presence)
	router, err := newVerdictRouter(opts.Log.AnswerConn(), instance, mets, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("verdict subscription: %w", err)
	}
	pres, err := newPresence(opts.Log.AnswerConn(), instance, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("presence subscription: %w", err)
	}
	s := &Server{
		started:  time.Now(),
		role:     role,
		log:      opts.Log,
		policies: pols,
		logger:   opts.Logger,
		verdicts: router,
		deciders: newDeciders(),
		presence: pres,
		metrics:  mets,
		maxSubs:  cmp.Or(opts.MaxSubscribers, DefaultMaxSubscribers),

		maxUnackedBytes: cmp.Or(opts.MaxUnackedBytes, DefaultMaxUnackedBytes),
		publishTimeout:  cmp.Or(opts.PublishTimeout, DefaultPublishTimeout),
		failoverWait:    max(cmp.Or(opts.FailoverWait, DefaultFailoverWait), MinAckWait),
		accessLog:       !opts.NoAccessLog,
		tracer:          opts.Tracer,

		maxEventBytes: int(min(opts.Log.MaxMessageBytes()-logHeaderRoom, MaxDeliveredEventBytes)),

		groupMembers:   map[string]int{},
		ordered:        map[string]*orderedGroup{},
		orderedStopped: map[string]chan struct{}{},
	}
	if w := cmp.Or(opts.DedupWindow, DefaultDedupWindow); w > 0 {
		s.dedup = newDedupTable(w)
	}
	s.committer = newCommitter(opts.Log, s.maxEventBytes)
	s.committer.metrics = mets
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	s.tails = newTailHub(s)
	s.groups = newGroupStore(s, opts.Log.Groups())
	go pres.run(s.stopCtx)
	go s.groups.run(s.stopCtx)
	return s, nil
}

// MaxBodyBytes is the largest callback body whose event is sure to fit in the event log, for
// requests whose line and headers take at most headerBytes (the request metadata comes from them).
// An event holds the body as received, its decoded fields (no longer than the body when its strings
// are valid UTF-8; invalid bytes become the 3-byte U+FFFD) and the metadata. A callback whose event
// is larger all the same is refused before anything is stored (ResourceExhausted).
func (s *Server) MaxBodyBytes(headerBytes int64) int64 {
	return max(0, (int64(s.maxEventBytes)-headerBytes-eventFixedRoom)/2)
}

// Register adds the callback services, the EventService and the AdminService to a gRPC server.
func (s *Server) Register(gs grpc.ServiceRegistrar) {
	pb.RegisterOpenIMCallbackServiceServer(gs, s.OpenIM())
	pb.RegisterTencentCallbackServiceServer(gs, s.Tencent())
	pb.RegisterEventServiceServer(gs, s)
	pb.RegisterAdminServiceServer(gs, s.Admin())
}

// OpenIM is the OpenIM callback service (both vendors have an RPC named Callback, hence two types).
func (s *Server) OpenIM() pb.OpenIMCallbackServiceServer { return openimService{s: s} }

// Tencent is the Tencent callback service.
func (s *Server) Tencent() pb.TencentCallbackServiceServer { return tencentService{s: s} }

// Close ends subscriber streams; their unacked events go back to their groups. Verdicts keep
// flowing until the event log closes, so callbacks still in flight over gRPC are answered.
func (s *Server) Close(ctx context.Context) error {
	s.closeMu.Lock()
	s.closing = true
	s.closeMu.Unlock()
	s.stop()
	done := make(chan struct{})
	go func() { s.subs.Wait(); close(done) }()
	select {
	case <-done:
		s.groups.wait(ctx) // the floors of the groups whose members just left
		return nil
	case <-ctx.Done():
		return fmt.Errorf("subscribers still closing: %w", ctx.Err())
	}
}

// Stop stops storing events: call it last, once no callback can arrive any more (after the HTTP
// server and the gRPC server have stopped). Callbacks arriving later fail with Unavailable.
func (s *Server) Stop() { s.committer.close() }

// Ready reports whether callbacks can be stored.
func (s *Server) Ready(ctx context.Context) error { return s.log.Ready(ctx) }

// FlushGroupRecords waits, until ctx ends, for the group records being written because a group's
// last member here left (groupstate.go); Close does it too.
func (s *Server) FlushGroupRecords(ctx context.Context) { s.groups.wait(ctx) }
