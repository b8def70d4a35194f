package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// soakGroup is a consumer group of the soak test and what its members do.
type soakGroup struct {
	name          string
	maxDeliveries uint32
	nackEvery     int                  // nack (with a short delay) every n-th event received; 0: never
	poison        func(op string) bool // events always nacked: they end as dead letters

	mu    sync.Mutex
	seen  map[string]int  // receipts by operation id
	acked map[string]bool // operation ids acked
	nacks int
}

func (g *soakGroup) receive(ev *pb.Event) (op string, n int) {
	op = ev.GetMetadata().GetOperationId()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seen[op]++
	return op, g.seen[op]
}

// TestSoak (make soak, bounded by IMBRIDGE_SOAK_DURATION, default 3m): posters send after-callbacks
// to the real binary while three groups of two members each take them: one acks, one also nacks
// some, one always nacks a few (poison: they end as dead letters); members crash (leave holding
// unacked events) and reconnect; the bridge is killed with SIGKILL twice and restarted on its data
// directory. At the end every callback answered OK has reached every group, or its dead letters;
// duplicates are counted and reported.
func TestSoak(t *testing.T) {
	if os.Getenv("IMBRIDGE_SOAK") == "" {
		t.Skip("make soak runs this")
	}
	dur := 3 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("IMBRIDGE_SOAK_DURATION")); err == nil {
		dur = d
	}
	dataDir := t.TempDir()
	var bridge atomic.Pointer[process]
	bridge.Store(startServe(t, dataDir, "--access-log=false"))

	poisonOf := func(op string) bool {
		h := fnv.New32a()
		h.Write([]byte(op))
		return h.Sum32()%97 == 0
	}
	groups := []*soakGroup{
		{name: "plain"},
		{name: "flaky", nackEvery: 25},
		{name: "poison", maxDeliveries: 3, poison: poisonOf},
	}
	run, stopMembers := context.WithCancel(context.Background())
	defer stopMembers()
	var members sync.WaitGroup
	for _, g := range groups {
		g.seen, g.acked = map[string]int{}, map[string]bool{}
		for m := range 2 {
			members.Add(1)
			go func() {
				defer members.Done()
				soakMember(run, &bridge, g, int64(m))
			}()
		}
	}

	// Posters, at about 200 callbacks/s in all, until dur has passed.
	var okMu sync.Mutex
	ok := map[string]bool{}
	var failed atomic.Int64
	posting, stopPosting := context.WithTimeout(context.Background(), dur)
	defer stopPosting()
	var posters sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for w := range 4 {
		posters.Add(1)
		go func() {
			defer posters.Done()
			tick := time.NewTicker(20 * time.Millisecond) // pacing, not synchronization
			defer tick.Stop()
			for i := 0; posting.Err() == nil; i++ {
				<-tick.C
				op := fmt.Sprintf("p%d-%d", w, i)
				body := `{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G` + op + `","userID":"u"}`
				req, _ := http.NewRequest(http.MethodPost, "http://"+bridge.Load().httpAddr+"/openim/callbackAfterQuitGroupCommand", strings.NewReader(body))
				req.Header.Set("operationID", op)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					continue
				}
				okMu.Lock()
				ok[op] = true
				okMu.Unlock()
			}
		}()
	}

	// Two kills, at a third and two thirds of the run.
	for k := 1; k <= 2; k++ {
		select {
		case <-time.After(dur / 3): // the soak's schedule, not a synchronization
		case <-t.Context().Done():
			return
		}
		p := bridge.Load()
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = p.wait(t)
		bridge.Store(startServe(t, dataDir, "--access-log=false"))
		t.Logf("bridge killed (SIGKILL) and restarted, %d", k)
	}
	posters.Wait()
	okMu.Lock()
	want := len(ok)
	okMu.Unlock()

	// Every callback answered OK reaches every group, or its dead letters.
	deadline := time.Now().Add(2 * time.Minute)
	var missing map[string][]string
	for {
		missing = map[string][]string{}
		dead := soakDeadLetters(t, bridge.Load().grpcAddr)
		for _, g := range groups {
			g.mu.Lock()
			for op := range ok {
				if !g.acked[op] && !dead[g.name][op] {
					missing[g.name] = append(missing[g.name], op)
				}
			}
			g.mu.Unlock()
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second) // waiting out ack waits and nack delays; bounded by deadline
	}
	stopMembers()
	members.Wait()
	dead := soakDeadLetters(t, bridge.Load().grpcAddr)
	t.Logf("%v: %d callbacks answered OK, %d failed or refused (kills included)", dur, want, failed.Load())
	if want == 0 {
		t.Fatal("no callback answered OK")
	}
	for _, g := range groups {
		g.mu.Lock()
		received, dups := 0, 0
		for op, n := range g.seen {
			if ok[op] {
				received++
				dups += n - 1
			}
		}
		t.Logf("group %s: %d of %d received, %d receipts beyond the first (%.2f%%; nacked events come again), %d nacks, %d dead letters",
			g.name, received, want, dups, 100*float64(dups)/float64(max(received, 1)), g.nacks, len(dead[g.name]))
		g.mu.Unlock()
		if n := len(missing[g.name]); n > 0 {
			t.Errorf("group %s: %d callbacks answered OK neither acked nor dead-lettered, e.g. %v", g.name, n, missing[g.name][:min(n, 5)])
		}
		poisoned := 0
		for op := range ok {
			if g.poison != nil && g.poison(op) {
				poisoned++
				if !dead[g.name][op] {
					t.Errorf("group %s: poison event %s not dead-lettered", g.name, op)
				}
			}
		}
		// With a low max_deliveries, crashes may use up an event's deliveries (the log counts records
		// handed back unseen): reported, not failed.
		if extra := len(dead[g.name]) - poisoned; extra > 0 && g.maxDeliveries == 0 {
			t.Errorf("group %s: %d dead letters besides the %d poison events: events it would have acked", g.name, extra, poisoned)
		} else if extra > 0 {
			t.Logf("group %s: %d dead letters besides the %d poison events (max_deliveries %d)", g.name, extra, poisoned, g.maxDeliveries)
		}
	}
}

// soakMember is one member of g: it subscribes to the bridge of the moment, handles events as g says,
// crashes every few hundred events, and reconnects whenever its stream ends, until ctx ends.
func soakMember(ctx context.Context, bridge *atomic.Pointer[process], g *soakGroup, seed int64) {
	received := 0
	for ctx.Err() == nil {
		conn, err := grpc.NewClient(bridge.Load().grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		crashAt := received + 200 + int(seed*97+int64(received))%300
		func() {
			defer cancel()
			stream, err := pb.NewEventServiceClient(conn).Subscribe(sctx)
			if err != nil {
				return
			}
			sub := &pb.Subscription{Group: g.name, MaxInFlight: 64, AckWait: durationpb.New(5 * time.Second), MaxDeliveries: g.maxDeliveries}
			if stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}}) != nil {
				return
			}
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				ev := resp.GetEvent()
				if ev == nil {
					continue
				}
				received++
				if received >= crashAt {
					return // crash: leave holding what is unacked
				}
				op, _ := g.receive(ev)
				var req *pb.SubscribeRequest
				switch {
				case g.poison != nil && g.poison(op):
					req = &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{EventId: ev.Id, Reason: "poison " + op}}}
				case g.nackEvery > 0 && received%g.nackEvery == 0:
					req = &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{EventId: ev.Id, Reason: "busy", Delay: durationpb.New(50 * time.Millisecond)}}}
				default:
					req = &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{EventId: ev.Id}}}
				}
				if stream.Send(req) != nil {
					return
				}
				g.mu.Lock()
				if req.GetNack() != nil {
					g.nacks++
				} else {
					g.acked[op] = true
				}
				g.mu.Unlock()
			}
		}()
		conn.Close()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // reconnection backoff
		}
	}
}

// soakDeadLetters lists the dead letters' operation ids by group.
func soakDeadLetters(t *testing.T, addr string) map[string]map[string]bool {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	out := map[string]map[string]bool{}
	var after uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := admin.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{AfterSequence: after, Limit: 1000})
		cancel()
		if err != nil {
			t.Fatalf("list dead letters: %v", err)
		}
		for _, dl := range resp.GetDeadLetters() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			full, err := admin.GetDeadLetter(ctx, &pb.GetDeadLetterRequest{Sequence: dl.Sequence})
			cancel()
			if err != nil {
				t.Fatalf("get dead letter %d: %v", dl.Sequence, err)
			}
			if out[dl.Group] == nil {
				out[dl.Group] = map[string]bool{}
			}
			out[dl.Group][full.GetEvent().GetMetadata().GetOperationId()] = true
		}
		if resp.GetNextAfter() == 0 || len(resp.GetDeadLetters()) == 0 {
			return out
		}
		after = resp.GetNextAfter()
	}
}
