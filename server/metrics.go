package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors. They count whether or not a registry was given.
// Labels are bounded: commands no IM server is known to send are "other"; groups are the
// operators' own (a live tail is group "").
type metrics struct {
	// rejected counts what was read from NATS and not used, by reason (the reject... constants).
	rejected *prometheus.CounterVec
	// tailCutoffs counts live tails cut off for falling behind.
	tailCutoffs prometheus.Counter
	// duplicates counts retries answered without being stored again (dedup.go).
	duplicates prometheus.Counter

	callbacks   *prometheus.CounterVec   // vendor, command, phase, answer
	callbackDur *prometheus.HistogramVec // vendor, phase, answer
	publishDur  prometheus.Histogram
	recordSize  prometheus.Histogram

	verdicts       *prometheus.CounterVec // group, decision
	deadlineMisses *prometheus.CounterVec // group
	verdictWait    prometheus.Histogram

	subscribers  *prometheus.GaugeVec   // group
	deliveries   *prometheus.CounterVec // group
	redeliveries *prometheus.CounterVec // group
	acks         *prometheus.CounterVec // group
	ackDur       *prometheus.HistogramVec
	nacks        *prometheus.CounterVec // group
	deadLetters  *prometheus.CounterVec // group
}

// Reasons of imbridge_nats_rejected_total.
const (
	rejectRecord     = "record"          // a log message that is not a record of events
	rejectEvent      = "event"           // an event in a record that is not a valid Event
	rejectDuplicate  = "duplicate_event" // an event whose id a member already holds
	rejectVerdictTo  = "verdict_to"      // an event naming a verdict subject that is not a bridge's
	rejectVerdict    = "verdict"         // a verdict message that is not a valid Verdict
	rejectState      = "redelivery"      // a redelivery entry that cannot be read (redelivery.go)
	rejectDeadLetter = "dead_letter"     // a dead letter that cannot be read (deadletter.go)
	rejectGroup      = "group_record"    // a consumer group's record that cannot be read (groupstate.go)
)

// latencyBuckets span a callback's answer: from a stored after-callback (about a millisecond) to a
// before-callback's longest deadline (15 s).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 15}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imbridge_nats_rejected_total",
			Help: "Messages and events read from NATS (the event log, verdicts between instances) that were not used because they could not be read or trusted, by reason.",
		}, []string{"reason"}),
		tailCutoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imbridge_tail_cutoffs_total",
			Help: "Live tails (subscriptions without a group) cut off because they fell behind by more than --max-unacked-bytes.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imbridge_callback_duplicates_total",
			Help: "Callbacks answered OK without being stored again: retries of callbacks this instance stored within --dedup-window (those the log itself dropped are not counted).",
		}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imbridge_callbacks_total",
			Help: "Callbacks answered, by vendor, command (other: one no IM server is known to send), phase and answer (ok, duplicate, refused, failure_policy, bad_request, unauthenticated, forbidden, too_large, unavailable, error).",
		}, []string{"vendor", "command", "phase", "answer"}),
		callbackDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imbridge_callback_duration_seconds",
			Help:    "Time from a callback's arrival to its answer, by vendor, phase and answer.",
			Buckets: latencyBuckets,
		}, []string{"vendor", "phase", "answer"}),
		publishDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imbridge_log_publish_seconds",
			Help:    "Time from a record's publish to the event log's acknowledgement (it is stored).",
			Buckets: latencyBuckets,
		}),
		recordSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imbridge_log_record_events",
			Help:    "Events per record written to the event log (callbacks that arrive together share one: group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imbridge_verdicts_total",
			Help: "Verdicts deciders gave, by consumer group and decision (allow, refuse); a plain ack from a decider is an allow.",
		}, []string{"group", "decision"}),
		deadlineMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imbridge_verdict_deadline_misses_total",
			Help: "Callbacks a decider group did not answer before the deadline (the failure policy answered), by group.",
		}, []string{"group"}),
		verdictWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imbridge_verdict_wait_seconds",
			Help:    "Time a callback waited for its deciders' verdicts, from the event's store to the last verdict, the first refusal or the deadline.",
			Buckets: latencyBuckets,
		}),
		subscribers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imbridge_subscribers",
			Help: "Subscribe streams connected to this instance, by consumer group (\"\": live tails).",
		}, []string{"group"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imbridge_deliveries_total",
			Help: "Events sent to subscribers, by consumer group (\"\": live tails), redeliveries included.",
		}, []string{"group"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imbridge_redeliveries_total",
			Help: "Events sent again to a group (their ack wait passed, a member nacked them or left without acking), by consumer group.",
		}, []string{"group"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imbridge_acks_total",
			Help: "Events acked or decided by subscribers, by consumer group.",
		}, []string{"group"}),
		ackDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imbridge_ack_seconds",
			Help:    "Time from an event's delivery to its ack or verdict, by consumer group.",
			Buckets: latencyBuckets,
		}, []string{"group"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imbridge_nacks_total",
			Help: "Events subscribers nacked (could not handle), by consumer group.",
		}, []string{"group"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imbridge_dead_letters_total",
			Help: "Events moved to the dead letters after max_deliveries, by consumer group.",
		}, []string{"group"}),
	}
	for _, r := range []string{rejectRecord, rejectEvent, rejectDuplicate, rejectVerdictTo, rejectVerdict, rejectState, rejectDeadLetter, rejectGroup} {
		m.rejected.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{
			m.rejected, m.tailCutoffs, m.duplicates, m.callbacks, m.callbackDur, m.publishDur, m.recordSize,
			m.verdicts, m.deadlineMisses, m.verdictWait, m.subscribers, m.deliveries, m.redeliveries, m.acks, m.ackDur,
			m.nacks, m.deadLetters,
		} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) callback(vendor, command, phase, answer string, d time.Duration) {
	m.callbacks.WithLabelValues(vendor, command, phase, answer).Inc()
	m.callbackDur.WithLabelValues(vendor, phase, answer).Observe(d.Seconds())
}

// groupMetrics are one subscriber's collectors, looked up once.
type groupMetrics struct {
	deliveries, redeliveries, acks, nacks, deadLetters prometheus.Counter
	ackDur                                             prometheus.Observer
}

func (m *metrics) forGroup(group string) groupMetrics {
	return groupMetrics{
		deliveries:   m.deliveries.WithLabelValues(group),
		redeliveries: m.redeliveries.WithLabelValues(group),
		acks:         m.acks.WithLabelValues(group),
		ackDur:       m.ackDur.WithLabelValues(group),
		nacks:        m.nacks.WithLabelValues(group),
		deadLetters:  m.deadLetters.WithLabelValues(group),
	}
}

// forgetGroup drops a deleted group's series.
func (m *metrics) forgetGroup(group string) {
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{m.deliveries, m.redeliveries, m.acks, m.ackDur, m.subscribers, m.deadlineMisses, m.nacks, m.deadLetters} {
		v.DeleteLabelValues(group)
	}
	m.verdicts.DeletePartialMatch(prometheus.Labels{"group": group})
}
