package server

import "github.com/prometheus/client_golang/prometheus"

// metrics are the server's Prometheus collectors. They count whether or not a registry was given.
type metrics struct {
	// rejected counts what was read from NATS and not used, by reason (the reject... constants).
	rejected *prometheus.CounterVec
	// tailCutoffs counts live tails cut off for falling behind.
	tailCutoffs prometheus.Counter
}

// Reasons of imbridge_nats_rejected_total.
const (
	rejectRecord    = "record"          // a log message that is not a record of events
	rejectEvent     = "event"           // an event in a record that is not a valid Event
	rejectDuplicate = "duplicate_event" // an event whose id a member already holds
	rejectVerdictTo = "verdict_to"      // an event naming a verdict subject that is not a bridge's
	rejectVerdict   = "verdict"         // a verdict message that is not a valid Verdict
)

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
	}
	for _, r := range []string{rejectRecord, rejectEvent, rejectDuplicate, rejectVerdictTo, rejectVerdict} {
		m.rejected.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.rejected, m.tailCutoffs} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
