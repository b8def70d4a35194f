package server

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imbridge/imbridge/eventlog"
)

// logCollector reads the event log's state when /metrics is scraped: the stream's size, and each
// consumer group's backlog as the log counts it (in records: a record holds one or more events). It
// asks the log, not this instance, so every instance reports every group, members connected or not.
//
// The answers are kept logCacheTTL: a scrape costs the log a stream info and a consumer list, and
// /metrics may be reachable by more than the operators' Prometheus.
type logCollector struct {
	log    *eventlog.Log
	mu     sync.Mutex
	at     time.Time           // of cached; guarded by mu
	cached []prometheus.Metric // guarded by mu
	up, messages, bytes, firstSeq, lastSeq, maxBytes, maxAge, oldestAge, deadLetters,
	pending, unacked, redelivered *prometheus.Desc
}

// logScrapeTimeout bounds the questions one scrape asks the log.
const (
	logScrapeTimeout = 2 * time.Second
	logCacheTTL      = 2 * time.Second
)

func newLogCollector(log *eventlog.Log) *logCollector {
	group := []string{"group"}
	return &logCollector{
		log:         log,
		up:          prometheus.NewDesc("imbridge_log_up", "1 if the event log answered this scrape's questions, else 0.", nil, nil),
		messages:    prometheus.NewDesc("imbridge_log_records", "Records in the event log's stream.", nil, nil),
		bytes:       prometheus.NewDesc("imbridge_log_bytes", "Bytes in the event log's stream.", nil, nil),
		firstSeq:    prometheus.NewDesc("imbridge_log_first_sequence", "Stream sequence of the oldest record kept.", nil, nil),
		lastSeq:     prometheus.NewDesc("imbridge_log_last_sequence", "Stream sequence of the newest record.", nil, nil),
		maxBytes:    prometheus.NewDesc("imbridge_log_max_bytes", "The event log's size limit (--retention-max-bytes): past it the oldest records are removed, delivered or not. Absent when there is none.", nil, nil),
		maxAge:      prometheus.NewDesc("imbridge_log_max_age_seconds", "How long the event log keeps a record (--retention-max-age), delivered or not.", nil, nil),
		oldestAge:   prometheus.NewDesc("imbridge_log_oldest_record_age_seconds", "Age of the oldest record kept: near imbridge_log_max_age_seconds, or imbridge_log_bytes near imbridge_log_max_bytes, records are being removed for space or age.", nil, nil),
		deadLetters: prometheus.NewDesc("imbridge_dead_letter_records", "Dead letters kept (imbridge dlq list).", nil, nil),
		pending:     prometheus.NewDesc("imbridge_group_pending_records", "Records a consumer group has not been sent yet: its backlog.", group, nil),
		unacked:     prometheus.NewDesc("imbridge_group_unacked_records", "Records sent to a consumer group and not acked yet.", group, nil),
		redelivered: prometheus.NewDesc("imbridge_group_redelivered_records", "Records sent to a consumer group more than once and not acked yet.", group, nil),
	}
}

func (c *logCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.messages, c.bytes, c.firstSeq, c.lastSeq, c.maxBytes, c.maxAge, c.oldestAge, c.deadLetters, c.pending, c.unacked, c.redelivered} {
		ch <- d
	}
}

func (c *logCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock() // concurrent scrapes wait for one to ask
	defer c.mu.Unlock()
	if time.Since(c.at) > logCacheTTL {
		c.cached = c.cached[:0]
		c.collect(func(m prometheus.Metric) { c.cached = append(c.cached, m) })
		c.at = time.Now()
	}
	for _, m := range c.cached {
		ch <- m
	}
}

func (c *logCollector) collect(emit func(prometheus.Metric)) {
	ctx, cancel := context.WithTimeout(context.Background(), logScrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		emit(prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	stream, err := c.log.JetStream().Stream(ctx, c.log.Stream())
	if err != nil {
		gauge(c.up, 0)
		return
	}
	info, err := stream.Info(ctx)
	if err != nil {
		gauge(c.up, 0)
		return
	}
	gauge(c.messages, float64(info.State.Msgs))
	gauge(c.bytes, float64(info.State.Bytes))
	gauge(c.firstSeq, float64(info.State.FirstSeq))
	gauge(c.lastSeq, float64(info.State.LastSeq))
	if info.Config.MaxBytes > 0 {
		gauge(c.maxBytes, float64(info.Config.MaxBytes))
	}
	gauge(c.maxAge, info.Config.MaxAge.Seconds())
	if info.State.Msgs > 0 {
		gauge(c.oldestAge, time.Since(info.State.FirstTime).Seconds())
	}
	dead, err := c.log.DeadLetters().Info(ctx)
	if err != nil {
		gauge(c.up, 0)
		return
	}
	gauge(c.deadLetters, float64(dead.State.Msgs))
	consumers := stream.ListConsumers(ctx)
	for ci := range consumers.Info() {
		if _, ok := ci.Config.Metadata[metaFilter]; !ok || ci.Config.Durable == "" {
			continue // a live tail's, or not the bridge's
		}
		gauge(c.pending, float64(ci.NumPending), ci.Name)
		gauge(c.unacked, float64(ci.NumAckPending), ci.Name)
		gauge(c.redelivered, float64(ci.NumRedelivered), ci.Name)
	}
	if consumers.Err() != nil {
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
}
