package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// floorServer is the verdict round trip's bare limit: the baseline's net/http and encoding/json, an
// event sent to one deciding subscriber over the bridge's own Subscribe stream (plain grpc-go
// settings), and its verdict mapped to the answer. No event log, no grpc-gateway, no policies: what
// is left is the two HTTP and two gRPC hops every verdict takes, on this machine. The bench's own
// decider (subscribers.go) talks to it unchanged.
type floorServer struct {
	pb.UnimplementedEventServiceServer

	ids atomic.Uint64

	mu      sync.Mutex
	decider *floorDecider               // guarded by mu; the last one subscribed
	waiting map[string]chan *pb.Verdict // guarded by mu; by event id
}

// floorDecider is a subscribed stream; Send is not safe for concurrent use, hence sendMu.
type floorDecider struct {
	sendMu sync.Mutex
	stream grpc.BidiStreamingServer[pb.SubscribeRequest, pb.SubscribeResponse]
}

const floorDeadline = 5 * time.Second

// runFloorServer serves the floor: it prints "<http addr> <grpc addr>" on stdout and serves until
// killed.
func runFloorServer() error {
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f := newFloorServer()
	go func() { _ = f.grpcServer().Serve(grpcLis) }()
	fmt.Println(httpLis.Addr().String(), grpcLis.Addr().String())
	return http.Serve(httpLis, f)
}

func newFloorServer() *floorServer {
	return &floorServer{waiting: map[string]chan *pb.Verdict{}}
}

func (f *floorServer) grpcServer() *grpc.Server {
	gs := grpc.NewServer()
	pb.RegisterEventServiceServer(gs, f)
	return gs
}

func (f *floorServer) Subscribe(stream grpc.BidiStreamingServer[pb.SubscribeRequest, pb.SubscribeResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	d := &floorDecider{stream: stream}
	err = stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Subscribed{
		Subscribed: &pb.Subscribed{Group: first.GetSubscription().GetGroup()},
	}})
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.decider = d
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		if f.decider == d {
			f.decider = nil
		}
		f.mu.Unlock()
	}()
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		v := req.GetVerdict()
		if v == nil {
			continue
		}
		f.mu.Lock()
		ch := f.waiting[v.GetEventId()]
		delete(f.waiting, v.GetEventId())
		f.mu.Unlock()
		if ch != nil {
			ch <- v.GetVerdict()
		}
	}
}

func (f *floorServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var b baselineBody
	if err == nil {
		err = json.Unmarshal(body, &b)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := strconv.FormatUint(f.ids.Add(1), 10)
	ch := make(chan *pb.Verdict, 1)
	f.mu.Lock()
	d := f.decider
	if d != nil {
		f.waiting[id] = ch
	}
	f.mu.Unlock()
	if d == nil {
		http.Error(w, "no decider", http.StatusServiceUnavailable)
		return
	}
	ev := &pb.Event{Id: id, Command: b.CallbackCommand, Phase: pb.Phase_PHASE_BEFORE, Source: pb.Source_SOURCE_OPENIM, RawBody: body}
	d.sendMu.Lock()
	err = d.stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Event{Event: ev}})
	d.sendMu.Unlock()
	var v *pb.Verdict
	if err == nil {
		timer := time.NewTimer(floorDeadline)
		select {
		case v = <-ch:
		case <-timer.C:
		case <-r.Context().Done():
		}
		timer.Stop()
	}
	if v == nil {
		f.mu.Lock()
		delete(f.waiting, id)
		f.mu.Unlock()
		http.Error(w, "no verdict", http.StatusGatewayTimeout)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if v.GetDecision() == pb.Decision_DECISION_REFUSE {
		_, _ = fmt.Fprintf(w, `{"actionCode":1,"errCode":%d,"errMsg":%q,"errDlt":"","nextCode":0}`, v.GetErrorCode(), v.GetMessage())
		return
	}
	_, _ = w.Write(baselineAnswer)
}
