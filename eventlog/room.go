package eventlog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"
)

// A full disk. JetStream refuses a write past its storage limit ("insufficient resources"; on the
// embedded server the limit is the disk space free when it started), and a write that meets a full
// disk fails inside the store: nats-server then keeps that stream's store failed (it takes no more
// writes and acknowledges none) until JetStream restarts. Either way no callback is answered OK
// unstored: Publish returns ErrFull, and Ready says so.
//
// When space comes back (records age out, an operator frees the disk), a write refused for the
// limit succeeds again once the usage is under it; readiness finds out with a probe write into the
// redelivery bucket, which shares the limit, at most once per probeEvery. The rest is the embedded
// server's watchdog's (room.watch): it sees a store failed on a full disk in nats-server's health
// report and from then on answers writes ErrFull at once, instead of letting each wait for an
// acknowledgement that never comes; and once the disk has minFreeBytes free it restarts JetStream,
// which reloads every stream and consumer from disk and sets its limit anew from the space free
// (which the operator's freeing of the disk does not raise otherwise). Over an external NATS server
// that is its operators' to do (its /healthz reports the write error).
var ErrFull = errors.New("event log full")

const (
	jsInsufficientResources jetstream.ErrorCode = 10023
	probeEvery                                  = time.Second
	watchEvery                                  = time.Second
	// minFreeBytes of free disk let the watchdog restart a store that failed on a full disk.
	minFreeBytes = 2 * EmbeddedMaxPayload
)

// room tracks whether the log can take writes.
type room struct {
	// trouble is set while full or failed is: writes check it alone, without the lock.
	trouble   atomic.Bool
	mu        sync.Mutex
	full      bool      // the last write failed for room, and nothing was written since; guarded by mu
	failed    string    // the embedded store's write error, while it lasts; guarded by mu
	suspect   bool      // a write went unacknowledged: the watchdog looks at the store; guarded by mu
	since     time.Time // when it became full; guarded by mu
	lastProbe time.Time // guarded by mu
	// restartFree is the disk space free at the watchdog's last restart of JetStream, while the log
	// stays full: it restarts again only once more is free; guarded by mu.
	restartFree uint64
}

// refuse returns ErrFull, without trying, while the embedded store is known failed.
func (l *Log) refuse() error {
	if !l.room.trouble.Load() {
		return nil
	}
	l.room.mu.Lock()
	defer l.room.mu.Unlock()
	if l.room.failed != "" {
		return fmt.Errorf("%w: %s", ErrFull, l.room.failed)
	}
	return nil
}

// noteWrite records a write's outcome and returns err as the caller sees it: wrapping ErrFull when
// the log had no room.
func (l *Log) noteWrite(err error) error {
	r := &l.room
	if err == nil {
		if !r.trouble.Load() {
			return nil
		}
		r.mu.Lock()
		if r.full && r.failed == "" { // a write in flight as the store failed does not clear it
			r.full = false
			r.troubled()
			l.opts.Logger.Info("event log takes writes again", "after", time.Since(r.since).Round(time.Millisecond))
		}
		r.mu.Unlock()
		return nil
	}
	unacked := l.ns != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoStreamResponse))
	var api *jetstream.APIError
	limit := errors.As(err, &api) && api.ErrorCode == jsInsufficientResources
	disk := strings.Contains(err.Error(), "no space left")
	if !limit && !disk && !unacked {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.suspect = r.suspect || unacked
	if !limit && !disk && r.failed == "" {
		return err // the watchdog tells whether the store failed
	}
	l.markFull(err)
	return fmt.Errorf("%w: %v", ErrFull, err)
}

// markFull notes that the log has no room; r.mu is held.
func (l *Log) markFull(why any) {
	if !l.room.full {
		l.room.full, l.room.since = true, time.Now()
		l.room.troubled()
		l.opts.Logger.Error("event log full: callbacks are answered 503 until it has room", "err", why)
	}
}

// roomError is the readiness error while the log is full: nil once it takes a write again.
func (l *Log) roomError(ctx context.Context) error {
	r := &l.room
	r.mu.Lock()
	full, failed, since := r.full, r.failed, r.since
	probe := full && failed == "" && time.Since(r.lastProbe) >= probeEvery
	if probe {
		r.lastProbe = time.Now()
	}
	r.mu.Unlock()
	switch {
	case failed != "":
		return fmt.Errorf("%w since %s: %s; the bridge restarts its store once the disk has %d MiB free", ErrFull, since.UTC().Format(time.RFC3339), failed, minFreeBytes>>20)
	case !full:
		return nil
	case probe:
		if _, err := l.redelivery.Put(ctx, "probe", nil); l.noteWrite(err) == nil {
			return nil
		}
	}
	return fmt.Errorf("%w since %s: writes are refused", ErrFull, since.UTC().Format(time.RFC3339))
}

// watch looks after the embedded store until ctx ends. When a write went unacknowledged or the log
// is full, it reads nats-server's health report: a store failed on a full disk makes writes fail at
// once. While the log is full, it restarts JetStream once the disk has room: minFreeBytes free, and
// more than at its last restart (so that a limit still too low is not restarted over and over).
func (l *Log) watch(ctx context.Context) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r := &l.room
		r.mu.Lock()
		look := r.suspect || r.full || r.failed != ""
		r.suspect = false
		if !r.full {
			r.restartFree = 0
		}
		r.mu.Unlock()
		if !look {
			continue
		}
		werr := l.storeError()
		r.mu.Lock()
		if werr != "" {
			l.markFull(werr)
		}
		r.failed, look = werr, r.full
		r.troubled()
		r.mu.Unlock()
		if !look {
			continue
		}
		free, ok := freeBytes(l.storeDir)
		r.mu.Lock()
		again := ok && free >= minFreeBytes && free > r.restartFree
		r.mu.Unlock()
		if !again {
			continue
		}
		if werr == "" {
			// Refused for the limit: maybe the usage is under it again.
			pctx, cancel := context.WithTimeout(ctx, probeEvery)
			_, err := l.redelivery.Put(pctx, "probe", nil)
			cancel()
			if l.noteWrite(err) == nil {
				continue
			}
		}
		l.opts.Logger.Warn("restarting the embedded JetStream: the event log is full and its disk has room", "free_bytes", free, "err", cmp.Or(werr, "storage limit"))
		if err := l.restartJetStream(); err != nil {
			l.opts.Logger.Error("embedded JetStream restart", "err", err)
			continue
		}
		r.mu.Lock()
		r.restartFree = free
		r.suspect = true // look again
		r.failed = ""
		r.troubled()
		r.lastProbe = time.Time{} // the next readiness check probes
		r.mu.Unlock()
	}
}

// storeError is the embedded store's write error as nats-server's health report gives it: the
// event stream's or JetStream's own; "" when healthy.
func (l *Log) storeError() string {
	if !l.ns.JetStreamEnabled() {
		return "JetStream disabled"
	}
	h := l.ns.Healthz(&natsserver.HealthzOptions{Details: true})
	for _, e := range h.Errors {
		if strings.Contains(e.Error, "write error") {
			return e.Error
		}
	}
	return ""
}

func (l *Log) restartJetStream() error {
	if l.ns.JetStreamEnabled() {
		if err := l.ns.ShutdownJetStream(); err != nil {
			return fmt.Errorf("shut down: %w", err)
		}
	}
	return l.ns.EnableJetStream(&natsserver.JetStreamConfig{StoreDir: l.storeDir})
}

// freeBytes is the space free to this process on the file system of dir.
func freeBytes(dir string) (uint64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}

// troubled sets trouble from full and failed; r.mu is held.
func (r *room) troubled() {
	r.trouble.Store(r.full || r.failed != "")
}
