package server

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/imbridge/imbridge/internal/logbuf"
)

// BenchmarkRecordAccessLine is what an answered callback costs in metrics and its access line.
func BenchmarkRecordAccessLine(b *testing.B) {
	w := logbuf.NewWriter(io.Discard)
	s := &Server{logger: slog.New(logbuf.Handler(slog.NewTextHandler(w, nil), w)), accessLog: true}
	s.metrics, _ = newMetrics(nil)
	o := &Outcome{Answer: AnswerOK, EventID: "pNJotWYegPbRO9bPDfwfjR", Command: "callbackAfterQuitGroupCommand", OperationID: "op-42"}
	rec := &CallRecord{Vendor: "openim", Transport: "http", Command: "callbackAfterQuitGroupCommand", Status: 200, Remote: "127.0.0.1:48780", Latency: 1234567 * time.Nanosecond, Outcome: o}
	b.ReportAllocs()
	for b.Loop() {
		s.Record(context.Background(), rec)
	}
}
