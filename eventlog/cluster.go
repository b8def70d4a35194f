package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamReplicas is the stream's replicas as the options ask: Options.Replicas, or by default 1 on
// the embedded server and 3 on an external cluster of 3 or more servers (as its servers tell the
// client when it connects).
func streamReplicas(opts Options, embedded bool, nc *nats.Conn) (int, error) {
	switch {
	case opts.Replicas < 0 || opts.Replicas > 5:
		return 0, fmt.Errorf("--stream-replicas %d: want 1 to 5 (JetStream's most), or 0 for the default", opts.Replicas)
	case embedded && opts.Replicas > 1:
		return 0, fmt.Errorf("--stream-replicas %d: the embedded server is one node; replicas need a NATS cluster (--nats-url)", opts.Replicas)
	case embedded:
		return 1, nil
	case opts.Replicas > 0:
		return opts.Replicas, nil
	case nc.ConnectedClusterName() != "" && len(nc.Servers()) >= 3:
		return 3, nil
	}
	return 1, nil
}

// reconcile reports how an existing stream on an external server differs from what the options
// ask (replicas, placement, retention), and updates it when Options.UpdateStream says so.
func (l *Log) reconcile(ctx context.Context, want jetstream.StreamConfig) error {
	have := l.stream.CachedInfo().Config
	var diffs []any
	if have.Replicas != want.Replicas {
		diffs = append(diffs, "replicas", have.Replicas, "asked_replicas", want.Replicas)
	}
	if want.Placement != nil && !samePlacement(have.Placement, want.Placement) {
		diffs = append(diffs, "placement", have.Placement, "asked_placement", want.Placement)
	}
	if have.MaxAge != want.MaxAge || have.MaxBytes != want.MaxBytes {
		diffs = append(diffs, "max_age", have.MaxAge, "max_bytes", have.MaxBytes, "asked_max_age", want.MaxAge, "asked_max_bytes", want.MaxBytes)
	}
	if len(diffs) == 0 {
		return nil
	}
	if !l.opts.UpdateStream {
		l.opts.Logger.Warn("the stream's settings differ from the flags: the stream's apply (--stream-update applies the flags', or change it with nats stream edit)",
			append([]any{"stream", have.Name}, diffs...)...)
		return nil
	}
	cfg := have
	cfg.Replicas, cfg.MaxAge, cfg.MaxBytes = want.Replicas, want.MaxAge, want.MaxBytes
	cfg.Duplicates = min(cfg.Duplicates, want.MaxAge)
	if want.Placement != nil {
		cfg.Placement = want.Placement
	}
	err := retryElection(ctx, func(ctx context.Context) error {
		var err error
		l.stream, err = l.js.UpdateStream(ctx, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("--stream-update: %w", err)
	}
	l.opts.Logger.Info("stream updated to the flags' settings", append([]any{"stream", have.Name}, diffs...)...)
	return nil
}

func samePlacement(a, b *jetstream.Placement) bool {
	if a == nil {
		a = &jetstream.Placement{}
	}
	return a.Cluster == b.Cluster && slices.Equal(a.Tags, b.Tags)
}

// retryElection runs f until it succeeds, fails for a reason other than a cluster that cannot
// answer yet (electing leaders, or not formed), or ctx ends. Each try gets at most 5 s.
func retryElection(ctx context.Context, f func(context.Context) error) error {
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(tctx)
		cancel()
		if err == nil || !electing(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// electing reports whether err says the JetStream cluster cannot answer for now: a request that
// timed out or found nobody, or JetStream's own "temporarily unavailable".
func electing(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse):
		return true
	case errors.As(err, &apiErr):
		// 503 covers JetStream's "system temporarily unavailable" (10008); 10005 is "no suitable
		// peers", until the cluster's peers have joined.
		return apiErr.Code == 503 || apiErr.ErrorCode == 10005
	}
	return false
}

// maxElecting is how long readiness calls a leaderless cluster an election (Degraded) before it
// calls it this instance's problem: a real election takes seconds, and an instance stuck on the
// minority side of a partition should be drained while the others serve.
const maxElecting = 30 * time.Second

// leaderless reports whether err is JetStream saying it has no leader to answer: no responders, or
// its 503 "temporarily unavailable". A timeout is not: this instance's node may be cut off.
func leaderless(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.As(err, &apiErr) && apiErr.Code == 503
}

// electingFor notes whether readiness now finds the cluster leaderless, and reports whether it has
// been so for less than maxElecting.
func (l *Log) electingFor(now bool) bool {
	l.electingMu.Lock()
	defer l.electingMu.Unlock()
	if !now {
		l.electingSince = time.Time{}
		return false
	}
	if l.electingSince.IsZero() {
		l.electingSince = time.Now()
	}
	return time.Since(l.electingSince) < maxElecting
}

// LogElecting is the readiness error of a log whose cluster cannot answer for now (its stream or
// meta leader is being elected, or it lost its quorum): every bridge instance on it is in the same
// state, so it says Degraded, for a load balancer to keep the instance (callbacks are answered 503
// within the publish budget meanwhile) rather than drain them all.
type LogElecting struct{ err error }

func (e *LogElecting) Error() string {
	return "event log cluster not answering (electing a leader, or without quorum): " + e.err.Error()
}
func (e *LogElecting) Unwrap() error  { return e.err }
func (e *LogElecting) Degraded() bool { return true }
