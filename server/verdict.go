package server

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Verdicts travel over core NATS, not in-process: a decider connected to another bridge instance
// answers an event that arrived here. Each instance listens on verdictPrefix.<instance>.<event id>;
// the event's verdictToHeader names that subject.
const (
	verdictPrefix   = "imbridge.verdicts"
	verdictToHeader = "Imbridge-Verdict-To"
	groupHeader     = "Imbridge-Group"
)

var (
	allowVerdict   = &pb.Verdict{Decision: pb.Decision_DECISION_ALLOW}
	timeoutMessage = "imbridge: no verdict before the deadline"
	noDeciderMsg   = "imbridge: no decider connected"
)

// verdictRouter hands verdicts arriving over NATS to the callbacks waiting for them.
type verdictRouter struct {
	prefix string // verdictPrefix.<instance>.
	sub    *nats.Subscription

	mu      sync.Mutex
	waiters map[string]*waiter // by event id; guarded by mu
}

// groupVerdict is one decider group's answer.
type groupVerdict struct {
	group   string
	verdict *pb.Verdict
}

// waiter collects the verdicts of one event.
type waiter struct {
	ch chan groupVerdict // buffered; the router never blocks on it
}

func newVerdictRouter(nc *nats.Conn) (*verdictRouter, error) {
	r := &verdictRouter{
		prefix:  verdictPrefix + "." + nuid.Next() + ".",
		waiters: map[string]*waiter{},
	}
	sub, err := nc.Subscribe(r.prefix+"*", r.deliver)
	if err != nil {
		return nil, err
	}
	r.sub = sub
	return r, nil
}

func (r *verdictRouter) close() {
	_ = r.sub.Unsubscribe()
}

func (r *verdictRouter) subject(eventID string) string { return r.prefix + eventID }

// register must come before the event is published, so that no verdict can arrive unheard.
func (r *verdictRouter) register(eventID string, groups int) *waiter {
	w := &waiter{ch: make(chan groupVerdict, groups)}
	r.mu.Lock()
	r.waiters[eventID] = w
	r.mu.Unlock()
	return w
}

func (r *verdictRouter) unregister(eventID string) {
	r.mu.Lock()
	delete(r.waiters, eventID)
	r.mu.Unlock()
}

func (r *verdictRouter) deliver(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, r.prefix)
	v := new(pb.Verdict)
	if err := proto.Unmarshal(m.Data, v); err != nil {
		return // not from a bridge: nothing to answer
	}
	r.mu.Lock()
	w := r.waiters[id]
	r.mu.Unlock()
	if w == nil {
		return // late: the callback was answered already
	}
	select {
	case w.ch <- groupVerdict{group: m.Header.Get(groupHeader), verdict: v}:
	default: // more answers than groups (a redelivered event answered twice): the first counts
	}
}

// sendVerdict publishes a decider's verdict to the instance waiting for it.
func sendVerdict(nc *nats.Conn, to, group string, v *pb.Verdict) error {
	data, err := proto.Marshal(v)
	if err != nil {
		return err
	}
	return nc.PublishMsg(&nats.Msg{Subject: to, Data: data, Header: nats.Header{groupHeader: []string{group}}})
}

// wait collects verdicts from the expected groups until all have allowed, one refuses, the deadline
// passes (failure policy) or ctx ends (the IM server went away; failure policy too).
func (w *waiter) wait(ctx context.Context, groups []string, deadline time.Duration, failure FailurePolicy) *pb.Verdict {
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	pending := make(map[string]bool, len(groups))
	for _, g := range groups {
		pending[g] = true
	}
	var merged *pb.Verdict
	for len(pending) > 0 {
		select {
		case gv := <-w.ch:
			if !pending[gv.group] {
				continue // a group that was not asked, or answered already
			}
			delete(pending, gv.group)
			if gv.verdict.GetDecision() == pb.Decision_DECISION_REFUSE {
				return gv.verdict
			}
			merged = mergeAllow(merged, gv.verdict)
		case <-timer.C:
			return failureVerdict(failure, timeoutMessage)
		case <-ctx.Done():
			return failureVerdict(failure, timeoutMessage)
		}
	}
	return merged
}

// mergeAllow combines allow verdicts: replacement fields of later ones win.
func mergeAllow(acc, v *pb.Verdict) *pb.Verdict {
	if acc == nil {
		return v
	}
	if v.GetGroupInfo() != nil {
		if acc.GroupInfo == nil {
			acc.GroupInfo = v.GroupInfo
		} else {
			proto.Merge(acc.GroupInfo, v.GroupInfo)
		}
	}
	return acc
}

func failureVerdict(f FailurePolicy, msg string) *pb.Verdict {
	if f == FailRefuse {
		return &pb.Verdict{Decision: pb.Decision_DECISION_REFUSE, Message: msg}
	}
	return allowVerdict
}

func refused(v *pb.Verdict) bool { return v.GetDecision() == pb.Decision_DECISION_REFUSE }
