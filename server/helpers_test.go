package server

import (
	"context"
	"log/slog"
	"testing"

	"github.com/nats-io/nuid"

	"github.com/imbridge/imbridge/eventlog"
)

// openLog opens an embedded event log in a temporary directory, closed when the test ends.
func openLog(tb testing.TB) *eventlog.Log {
	tb.Helper()
	log, err := eventlog.Open(context.Background(), eventlog.Options{DataDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { log.Close(context.Background()) })
	return log
}

// twoRouters are the verdict routers of two bridge instances sharing log's connection.
func twoRouters(tb testing.TB, log *eventlog.Log) (here, there *verdictRouter) {
	tb.Helper()
	m, err := newMetrics(nil)
	if err != nil {
		tb.Fatal(err)
	}
	here, err = newVerdictRouter(log.Conn(), nuid.Next(), m, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	there, err = newVerdictRouter(log.Conn(), nuid.Next(), m, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	return here, there
}
