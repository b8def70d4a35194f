package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imbridge/imbridge/eventlog"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bufpool"
)

// ingest stores ev and returns the verdict the IM server gets. For a callback that does not wait it
// returns as soon as the log has acknowledged the write. For one that waits, it first notes which
// decider groups must answer, publishes, then waits for them (see waiter.wait). With no decider
// connected, the failure policy answers at once.
func (s *Server) ingest(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
	o := outcomeFrom(ctx) // nil when nobody records the callback
	o.noteEvent(ev)
	s.decoded(ctx, o)
	if !s.role.Ingests() {
		return nil, errNotIngest
	}
	if err := checkCommand(ev.Command); err != nil {
		return nil, err
	}
	pol := s.policies.forCommand(ev.Command)
	var groups []string
	if pol.waits(ev.Phase) {
		groups = s.presence.deciding(ev, s.deciders.matching(ev))
	}
	var dupKey dedupKey // this callback's claim on its dedup key (zero: none), settled on the way out
	stored := false
	defer func() {
		if dupKey != (dedupKey{}) {
			s.dedup.end(dupKey, stored, time.Now())
		}
	}()
	if s.dedup != nil && !pol.waits(ev.Phase) {
		if key, ok := dedupKeyOf(ev); ok {
			first, done := s.dedup.claim(ctx, key, time.Now())
			switch {
			case first:
				dupKey = key
			case done:
				if o != nil {
					o.EventID = "" // this copy's id is nobody's: the first's event is the one stored
				}
				s.metrics.duplicates.Inc()
				o.noteAnswer(AnswerDuplicate, "a retry of a callback stored already: not stored again", s.tracer != nil)
				return allowVerdict, nil
			default:
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
	}
	msg := &nats.Msg{Subject: subjectFor(ev)}
	// The log must acknowledge within the publish budget, and a callback that waits, within its
	// deadline: past them, the IM server gets a 503 rather than an answer after it gave up.
	now := time.Now()
	deadline := now.Add(s.publishTimeout)
	if pol.waits(ev.Phase) {
		deadline = now.Add(min(s.publishTimeout, pol.deadline))
	}
	var w *waiter
	if len(groups) > 0 {
		ev.DecideBy = timestamppb.New(now.Add(pol.deadline))
		w = s.verdicts.register(ev.Id, groups)
		defer s.verdicts.unregister(ev.Id)
		msg.Header = nats.Header{verdictToHeader: []string{s.verdicts.subject(ev.Id)}}
	}
	s.injectTraceContext(ctx, &ev.TraceContext)
	size := proto.Size(ev)
	if size > s.maxEventBytes {
		return nil, errTooLarge(size, s.maxEventBytes)
	}
	buf := bufpool.Get(size)
	defer bufpool.Put(buf)
	data, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(*buf, ev)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "encode event: %v", err)
	}
	*buf = data
	msg.Data = data // copied into the log's record or connection buffer by the time store returns
	span := s.startSpan(ctx, "imbridge.publish", attribute.String("messaging.destination.name", msg.Subject))
	err = s.committer.store(ctx, msg, dupKey, deadline)
	stored = err == nil
	endSpan(span, err)
	if err != nil {
		s.logger.Warn("event not stored", "event", ev.Id, "command", ev.Command, "subject", msg.Subject, "err", err)
		switch {
		case errors.Is(err, eventlog.ErrFull):
			return nil, errLogFull
		case errors.Is(err, errPublishBudget):
			return nil, errLogSlow
		}
		return nil, errLogUnavailable
	}
	switch {
	case !pol.waits(ev.Phase):
		o.noteAnswer(AnswerOK, "", s.tracer != nil)
		return allowVerdict, nil
	case w == nil:
		o.noteAnswer(AnswerFailurePolicy, "no decider connected: failure policy "+string(pol.failure), s.tracer != nil)
		return failureVerdict(pol.failure, noDeciderMsg), nil
	}
	start := time.Now()
	span = s.startSpan(ctx, "imbridge.verdicts", attribute.StringSlice("imbridge.groups", groups))
	v, answer, refuser := w.wait(ctx, len(groups), time.Until(ev.DecideBy.AsTime()), pol.failure)
	s.metrics.verdictWait.Observe(time.Since(start).Seconds())
	if span != nil {
		span.SetAttributes(attribute.String("imbridge.answer", answer))
		span.End()
	}
	switch answer {
	case AnswerRefused:
		o.noteAnswer(answer, fmt.Sprintf("refused by group %s: %s", refuser, v.GetMessage()), s.tracer != nil)
	case AnswerFailurePolicy:
		missing := s.verdicts.missing(ev.Id)
		for _, g := range missing {
			s.metrics.deadlineMisses.WithLabelValues(g).Inc()
		}
		why := fmt.Sprintf("no verdict from %s within the %v deadline: failure policy %s", strings.Join(missing, ", "), pol.deadline, pol.failure)
		if ctx.Err() != nil {
			why = fmt.Sprintf("the IM server went away waiting for %s: failure policy %s", strings.Join(missing, ", "), pol.failure)
		}
		o.noteAnswer(answer, why, s.tracer != nil)
	default:
		o.noteAnswer(answer, "", s.tracer != nil)
	}
	return v, nil
}
