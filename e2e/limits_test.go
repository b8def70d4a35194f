package e2e

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// postPadded stores a quit event whose body carries pad bytes of padding.
func postPadded(t *testing.T, b *bridgetest.Bridge, pad int) {
	t.Helper()
	body := `{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G","userID":"u","pad":"` + strings.Repeat("x", pad) + `"}`
	if code, out := b.Post(t, http.MethodPost, "/openim/callbackAfterQuitGroupCommand", nil, []byte(body)); code != http.StatusOK {
		t.Fatalf("post: %d %s", code, out)
	}
}

// TestMemberByteBudget: a group member that does not ack holds at most --max-unacked-bytes of
// events and one more, whatever its max_in_flight; acks let more in, and an event larger than the
// whole budget is delivered too.
func TestMemberByteBudget(t *testing.T) {
	t.Parallel()
	const budget, posted = 100 << 10, 40
	b := bridgetest.Start(t, bridgetest.Options{MaxUnackedBytes: budget})
	for range posted {
		postPadded(t, b, 8<<10)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bridgetest.Timeout)
	defer cancel()
	sizes := map[uint64]int{} // stored size by stream sequence
	stream, err := b.Log.JetStream().Stream(ctx, b.Log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= posted; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		sizes[seq] = len(msg.Data)
	}

	sub := b.Subscribe(t, &pb.Subscription{Group: "budget", MaxInFlight: 10000})
	events := make(chan *pb.Event, 2*posted)
	go func() {
		for {
			resp, err := sub.Stream.Recv()
			if err != nil {
				close(events)
				return
			}
			events <- resp.GetEvent()
		}
	}()
	consumer, err := b.Log.JetStream().Consumer(ctx, b.Log.Stream(), "budget")
	if err != nil {
		t.Fatal(err)
	}
	var got []*pb.Event
	var info *jetstream.ConsumerInfo
	bridgetest.WaitFor(t, "the member to stop for its budget", func() bool {
		for len(events) > 0 {
			got = append(got, <-events)
		}
		if info, err = consumer.Info(ctx); err != nil {
			t.Fatal(err)
		}
		return len(got) > 0 && info.NumWaiting == 0 && info.NumAckPending == len(got) && int(info.NumPending)+len(got) == posted
	})
	held, largest := 0, 0
	for _, ev := range got {
		held += sizes[ev.Sequence]
		largest = max(largest, sizes[ev.Sequence])
	}
	if held > budget+largest {
		t.Fatalf("member holds %d events, %d bytes; want at most %d bytes and one event", len(got), held, budget)
	}
	t.Logf("member holds %d events, %d bytes, of a %d-byte budget", len(got), held, budget)

	// Acks free room: everything comes, and then an event larger than the budget.
	postPadded(t, b, budget+1<<10)
	for n := 0; n < posted+1; {
		ids := make([]string, len(got))
		for i, ev := range got {
			ids[i] = ev.Id
		}
		if len(ids) > 0 {
			sub.Ack(ids[0], ids[1:]...)
		}
		n += len(got)
		got = got[:0]
		if n == posted+1 {
			break
		}
		var ev *pb.Event
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("stream ended after %d events", n)
			}
			ev = e
		case <-ctx.Done():
			t.Fatalf("%d events of %d after %v", n, posted+1, bridgetest.Timeout)
		}
		got = append(got, ev)
		if ev.Sequence == posted+1 && len(ev.GetRawBody()) <= budget {
			t.Fatalf("last event of %d bytes; want more than the budget", len(ev.GetRawBody()))
		}
	}
}

// TestTailCutOff: a live tail that stops reading is cut off once it falls --max-unacked-bytes
// behind, with ResourceExhausted saying how many events it missed and from where; what it got is
// the log's prefix, in order.
func TestTailCutOff(t *testing.T) {
	t.Parallel()
	const posted = 300
	b := bridgetest.Start(t, bridgetest.Options{MaxUnackedBytes: 64 << 10})
	stream := slowTail(t, b)

	postPaddedBy4(t, b, posted)
	bridgetest.WaitFor(t, "the tail cut off", func() bool {
		return metricValue(t, b, "imbridge_tail_cutoffs_total") == 1
	})

	received, last := 0, uint64(0)
	for {
		resp, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("tail ended with %v; want ResourceExhausted", err)
			}
			m := regexp.MustCompile(`missed (\d+) events; it gets nothing from stream sequence (\d+) on`).FindStringSubmatch(status.Convert(err).Message())
			if m == nil {
				t.Fatalf("message %q does not say how many events were missed", status.Convert(err).Message())
			}
			missed, _ := strconv.Atoi(m[1])
			from, _ := strconv.ParseUint(m[2], 10, 64)
			if received == 0 || missed == 0 || received+missed > posted || from < last {
				t.Errorf("received %d to sequence %d, missed %d from sequence %d, of %d posted", received, last, missed, from, posted)
			}
			t.Logf("received %d, missed %d of %d posted: %v", received, missed, posted, err)
			return
		}
		// Events posted together share a record, and its sequence.
		ev := resp.GetEvent()
		if ev.Sequence != last && ev.Sequence != last+1 {
			t.Fatalf("event at sequence %d after %d; want the log's prefix in order", ev.Sequence, last)
		}
		last = ev.Sequence
		received++
	}
}

// postPaddedBy4 posts n callbacks of 8 KiB, from 4 posters at once.
func postPaddedBy4(t *testing.T, b *bridgetest.Bridge, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range n / 4 {
				postPadded(t, b, 8<<10)
			}
		})
	}
	wg.Wait()
}

// slowTail opens a live tail that reads only when the test does, on a connection whose fixed
// window (no BDP growth) bounds what the client's transport takes in unread.
func slowTail(t *testing.T, b *bridgetest.Bridge) pb.EventService_SubscribeClient {
	t.Helper()
	conn := b.Dial(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), bridgetest.Timeout)
	t.Cleanup(cancel)
	stream, err := pb.NewEventServiceClient(conn).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: &pb.Subscription{}}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetSubscribed() == nil {
		t.Fatalf("subscribe: %v %v", resp, err)
	}
	return stream
}

// metricValue reads a counter or gauge without labels from the bridge's registry.
func metricValue(t *testing.T, b *bridgetest.Bridge, name string) float64 {
	t.Helper()
	mfs, err := b.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestOnePullAtATime: a member has one pull request at the log at a time. The log follows a
// request whose batch was filled before its max_bytes with a "409 Batch Completed" status; taken as
// the end of the next request, it left requests behind, which delivered more records than the
// member had room for: NATS dropped them (slow consumer) and they waited out the ack wait.
func TestOnePullAtATime(t *testing.T) {
	t.Parallel()
	const posted = 60
	b := bridgetest.Start(t, bridgetest.Options{})
	for range posted {
		postQuit(t, b, "G")
	}
	ctx, cancel := context.WithTimeout(context.Background(), bridgetest.Timeout)
	defer cancel()
	sub := b.Subscribe(t, &pb.Subscription{Group: "one-pull", MaxInFlight: 3})
	consumer, err := b.Log.JetStream().Consumer(ctx, b.Log.Stream(), "one-pull")
	if err != nil {
		t.Fatal(err)
	}
	for i := range posted {
		ev := sub.Next()
		sub.Ack(ev.Id)
		info, err := consumer.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumWaiting > 1 {
			t.Fatalf("after %d events, %d pull requests wait at the log; want at most 1", i+1, info.NumWaiting)
		}
	}
}

// TestPullUsesBudgetExactly: a pull request whose records use its max_bytes up exactly is ended by
// the log without a status. The member once waited for more and, after two missed heartbeats,
// ended its subscriber's stream (UNAVAILABLE). Here the budget is the wire size of the first three
// records, measured with a consumer whose deliveries look the same.
func TestPullUsesBudgetExactly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := bridgetest.Start(t, bridgetest.Options{DataDir: dir})
	for range 5 {
		postPadded(t, first, 1000)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bridgetest.Timeout)
	defer cancel()
	probe, err := first.Log.JetStream().CreateConsumer(ctx, first.Log.Stream(), jetstream.ConsumerConfig{
		Durable: "probe", AckPolicy: jetstream.AckExplicitPolicy, // as long a name as "exact"
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := probe.Fetch(3)
	if err != nil {
		t.Fatal(err)
	}
	budget := 0
	for msg := range batch.Messages() {
		budget += len(msg.Subject()) + len(msg.Reply()) + len(msg.Data()) + headerBytes(msg.Headers())
	}
	first.Close()

	b := bridgetest.Start(t, bridgetest.Options{DataDir: dir, MaxUnackedBytes: budget})
	sub := b.Subscribe(t, &pb.Subscription{Group: "exact", MaxInFlight: 100})
	var ids []string
	for range 3 {
		ids = append(ids, sub.Next().Id)
	}
	sub.Ack(ids[0], ids[1:]...)
	for range 2 {
		sub.Next() // fails the test if the stream ends instead
	}
}

// headerBytes is the encoded size of NATS headers as the log counts them ("NATS/1.0\r\n", each
// "key: value\r\n", "\r\n"); none: 0.
func headerBytes(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}
