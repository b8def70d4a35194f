package eventlog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/imbridge/imbridge/eventlog"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// TestExternalServer: --nats-url goes through the same code as the embedded server. The external
// server here listens on a loopback port chosen by the OS.
func TestExternalServer(t *testing.T) {
	t.Parallel()
	testLog(t, eventlog.Options{URL: bridgetest.ExternalNATS(t)})
}

func TestEmbedded(t *testing.T) {
	t.Parallel()
	testLog(t, eventlog.Options{DataDir: t.TempDir()})
}

func testLog(t *testing.T, opts eventlog.Options) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := eventlog.Open(ctx, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := l.Ready(ctx); err != nil {
		t.Errorf("ready: %v", err)
	}
	for want := uint64(1); want <= 3; want++ {
		seq, err := l.Publish(ctx, &nats.Msg{Subject: eventlog.SubjectPrefix + ".test", Data: []byte("x")})
		if err != nil || seq != want {
			t.Errorf("publish: seq %d, %v; want %d", seq, err, want)
		}
	}
	// No stream answers: retried (as during a leader election) until its context ends.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	if _, err := l.Publish(short, &nats.Msg{Subject: "elsewhere", Data: []byte("x")}); err == nil || short.Err() == nil {
		t.Errorf("publish outside the stream's subjects: %v; want an error once its context ends (nothing acknowledged unstored)", err)
	}
	cancelShort()
	if err := l.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := l.Publish(ctx, &nats.Msg{Subject: eventlog.SubjectPrefix + ".test"}); err == nil {
		t.Error("publish after close: nil error")
	}
}

// TestExternalStreamKept: an existing stream on an external server keeps its operators' settings.
func TestExternalStreamKept(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url, js := operatorStream(t)
	l, err := eventlog.Open(ctx, eventlog.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	info, err := js.Stream(ctx, eventlog.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.MaxAge; got != time.Hour {
		t.Errorf("max age %v after Open; want the operator's 1h", got)
	}
	// The stream's own message limit is lower than the server's: it is the log's.
	if got := l.MaxMessageBytes(); got != 100_000 {
		t.Errorf("MaxMessageBytes = %d; want the stream's 100000", got)
	}
}

// operatorStream starts an external NATS server whose operators made the stream themselves (1h
// max age, 100,000-byte messages), and returns its URL and a JetStream client of theirs.
func operatorStream(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	url := bridgetest.ExternalNATS(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: eventlog.DefaultStream, Subjects: []string{eventlog.SubjectPrefix + ".>"}, MaxAge: time.Hour, MaxMsgSize: 100_000}); err != nil {
		t.Fatal(err)
	}
	return url, js
}

// TestExternalStreamUpdated: with UpdateStream, an existing stream whose retention differs from the
// options is changed to them, its other settings kept.
func TestExternalStreamUpdated(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url, js := operatorStream(t)
	l, err := eventlog.Open(ctx, eventlog.Options{URL: url, MaxAge: 2 * time.Hour, MaxBytes: 1 << 30, UpdateStream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	info, err := js.Stream(ctx, eventlog.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.CachedInfo().Config; c.MaxAge != 2*time.Hour || c.MaxBytes != 1<<30 || c.MaxMsgSize != 100_000 {
		t.Errorf("after Open with UpdateStream: max age %v, max bytes %d, max msg size %d; want 2h, 1GiB and the operator's 100000", c.MaxAge, c.MaxBytes, c.MaxMsgSize)
	}
}

// TestEmbeddedMessageLimit: the embedded log takes messages as large as gRPC delivers by default.
func TestEmbeddedMessageLimit(t *testing.T) {
	t.Parallel()
	l, err := eventlog.Open(t.Context(), eventlog.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	if got := l.MaxMessageBytes(); got != eventlog.EmbeddedMaxPayload {
		t.Errorf("MaxMessageBytes = %d; want %d", got, eventlog.EmbeddedMaxPayload)
	}
}

// TestRetention: past MaxBytes the oldest records are removed and writes go on; reopened with other
// limits, the embedded stream follows them.
func TestRetention(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	const limit = 64 << 10
	l, err := eventlog.Open(ctx, eventlog.Options{DataDir: dir, MaxBytes: limit, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<10)
	for range 200 {
		if _, err := l.Publish(ctx, &nats.Msg{Subject: eventlog.SubjectPrefix + ".test", Data: data}); err != nil {
			t.Fatalf("publish past the limit: %v; want the oldest removed instead", err)
		}
	}
	info, err := l.JetStream().Stream(ctx, l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	st := info.CachedInfo()
	if st.State.Bytes > limit || st.State.FirstSeq == 1 || st.State.LastSeq != 200 {
		t.Errorf("after 200 KiB into %d bytes: %d bytes, sequences %d-%d; want the oldest removed", limit, st.State.Bytes, st.State.FirstSeq, st.State.LastSeq)
	}
	if st.Config.MaxAge != time.Hour {
		t.Errorf("max age %v; want 1h", st.Config.MaxAge)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	l, err = eventlog.Open(ctx, eventlog.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	s, err := l.JetStream().Stream(ctx, l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.MaxBytes != -1 || c.MaxAge != eventlog.DefaultMaxAge {
		t.Errorf("reopened with the defaults: max bytes %d, max age %v; want no limit, %v", c.MaxBytes, c.MaxAge, eventlog.DefaultMaxAge)
	}
}

// TestReplicas: the embedded server is one node, so it refuses replicas; on an external server of
// one node the default is 1, and what is asked is what the stream gets.
func TestReplicas(t *testing.T) {
	t.Parallel()
	if _, err := eventlog.Open(t.Context(), eventlog.Options{DataDir: t.TempDir(), Replicas: 3}); err == nil || !strings.Contains(err.Error(), "embedded server is one node") {
		t.Errorf("embedded with 3 replicas: %v; want a refusal naming why", err)
	}
	url := bridgetest.ExternalNATS(t)
	l, err := eventlog.Open(t.Context(), eventlog.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	s, err := l.JetStream().Stream(t.Context(), l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 1 {
		t.Errorf("replicas on a single external server: %d; want 1", r)
	}
}
