// Package client is the Go client of imbridge's EventService, for the internal services that react
// to what happens in IM chat groups. It runs the Subscribe stream for them: it subscribes, hands
// each event to a handler, acks what the handler took (in batches), nacks what it failed with the
// error as the reason (RetryAfter sets a delay), answers before-callbacks with the handler's verdict
// by their deadline, bounds the work in flight, and reconnects with jittered backoff when the
// stream breaks, resuming where it was. It never logs: errors it recovers from go to
// WithErrorHandler.
//
// A service that logs member quits and refuses group names with a bad word:
//
//	c, err := client.Dial("imbridge:9090", client.WithToken(os.Getenv("IMBRIDGE_TOKEN")))
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer c.Close()
//	g, ctx := errgroup.WithContext(context.Background())
//	g.Go(func() error {
//		return c.Subscribe(ctx, client.Subscription{Group: "audit", Filter: client.Kinds(pb.EventKind_EVENT_KIND_MEMBER_QUIT)},
//			client.HandlerFunc(func(ctx context.Context, ev *pb.Event) error {
//				log.Printf("%v left %s", ev.GetMemberQuit().GetUserIds(), ev.GetMemberQuit().GetGroupId())
//				return nil // acked; an error nacks: the event comes again
//			}))
//	})
//	g.Go(func() error {
//		return c.Subscribe(ctx, client.Subscription{Group: "names", Filter: client.Commands("callbackBeforeSetGroupInfoExCommand")},
//			client.DeciderFunc(func(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
//				if name, ok := client.ChangedGroupName(ev); ok && strings.Contains(name, "spam") {
//					return client.Refuse(0, "this group name is not allowed"), nil
//				}
//				return client.Allow(), nil
//			}))
//	})
//	log.Fatal(g.Wait())
//
// Handlers run concurrently (Subscription.MaxInFlight at once) and must return when their ctx
// ends: when the stream breaks, the client waits for them before it reconnects. A handler's panic
// is recovered and nacks the event.
//
// Delivery is at least once: after a reconnect, or when another member's instance died, an event
// can come again. The client skips an event it acked recently (the last 4,096 ids of the
// subscription); a handler with lasting effects should still be idempotent on Event.id.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Client is a connection to an imbridge instance (or a load balancer in front of several).
type Client struct {
	conn   *grpc.ClientConn
	events pb.EventServiceClient
	opts   options
	closed atomic.Bool
}

type options struct {
	token            string
	tls              *tls.Config
	dial             []grpc.DialOption
	onError          func(error)
	minWait, maxWait time.Duration
}

// Option configures Dial.
type Option func(*options)

// WithToken authenticates every stream with a subscriber token (the bridge's auth.subscribers):
// sent as "authorization: Bearer <token>". Tokens travel in the clear without TLS: use WithTLS
// beyond a trusted network.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithTLS connects over TLS with cfg (its Certificates authenticate the client when the bridge
// asks for a client certificate, --client-ca). Without it the connection is plaintext.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithDialOptions adds gRPC dial options (a custom dialer, interceptors, keepalive).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// WithErrorHandler receives the errors the client recovers from: a stream that broke (it
// reconnects), a handler's error (the event is nacked), a verdict that could not be sent. Nil: they
// are dropped. It is called from the client's goroutines and must not block for long.
func WithErrorHandler(f func(error)) Option { return func(o *options) { o.onError = f } }

// WithBackoff sets the wait before reconnecting: first after the first failure, doubling up to
// most, each wait jittered by up to half of it. Default 100ms and 10s; first at least 1ms.
func WithBackoff(first, most time.Duration) Option {
	return func(o *options) { o.minWait, o.maxWait = first, most }
}

// Dial prepares a client for target (host:port, or any gRPC target). Like grpc.NewClient it does
// not connect until a subscription needs it.
func Dial(target string, opts ...Option) (*Client, error) {
	o := options{minWait: 100 * time.Millisecond, maxWait: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.minWait < time.Millisecond || o.maxWait < o.minWait {
		return nil, fmt.Errorf("client: backoff %v to %v: want 1ms <= first <= most", o.minWait, o.maxWait)
	}
	creds := insecure.NewCredentials()
	if o.tls != nil {
		creds = credentials.NewTLS(o.tls)
	}
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, o.dial...)
	if o.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{token: o.token, secure: o.tls != nil}))
	}
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Client{conn: conn, events: pb.NewEventServiceClient(conn), opts: o}, nil
}

// Close closes the connection; subscriptions end with ErrClosed.
func (c *Client) Close() error {
	c.closed.Store(true)
	return c.conn.Close()
}

// report hands err to the error handler, if any.
func (c *Client) report(err error) {
	if c.opts.onError != nil && err != nil {
		c.opts.onError(err)
	}
}

// backoff is the wait before reconnecting after n failures in a row (n >= 1).
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.minWait
	for i := 1; i < n; i++ {
		if d >= c.opts.maxWait/2 { // no overflow
			d = c.opts.maxWait
			break
		}
		d *= 2
	}
	d = min(d, c.opts.maxWait)
	return d/2 + rand.N(d/2+1) // jittered: instances that lost the same bridge do not come back at once
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bearer is the token as per-RPC credentials.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// errEnded is what a subscription's stream ended with when the bridge closed it cleanly (it shuts
// down): the client reconnects.
var errEnded = errors.New("the bridge ended the stream")

// ErrClosed is what Subscribe returns once the Client is closed.
var ErrClosed = errors.New("client: closed")
