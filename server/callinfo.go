package server

import (
	"context"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/nats-io/nuid"
)

// CallInfo is what an HTTP callback carried besides its decoded body. The gateway attaches it to the
// request context; a callback posted over gRPC has none, and the event is built from the request.
type CallInfo struct {
	// Body is the request body exactly as received.
	Body []byte
	// Received is when the request arrived.
	Received time.Time
	// Metadata from headers and query parameters (operationID, SdkAppid, ClientIP, ...).
	Metadata *pb.RequestMetadata
}

type callInfoKey struct{}

// WithCallInfo returns ctx carrying ci.
func WithCallInfo(ctx context.Context, ci *CallInfo) context.Context {
	return context.WithValue(ctx, callInfoKey{}, ci)
}

// CallInfoFrom returns the CallInfo attached by WithCallInfo, or nil.
func CallInfoFrom(ctx context.Context) *CallInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*CallInfo)
	return ci
}

// newEvent starts an Event for a callback: id, time, source, command, phase, metadata and raw body.
func newEvent(ctx context.Context, src pb.Source, command string, phase pb.Phase, req proto.Message) *pb.Event {
	ev := &pb.Event{
		Id:      nuid.Next(),
		Source:  src,
		Command: command,
		Phase:   phase,
		Kind:    pb.EventKind_EVENT_KIND_RAW,
	}
	if ci := CallInfoFrom(ctx); ci != nil {
		ev.ReceivedTime = timestamppb.New(ci.Received)
		ev.Metadata = ci.Metadata
		ev.RawBody = ci.Body
		return ev
	}
	// Posted over gRPC (grpcurl, tests): keep the request as the vendor would have sent it.
	ev.ReceivedTime = timestamppb.Now()
	ev.RawBody, _ = protojson.Marshal(req)
	ev.Metadata = &pb.RequestMetadata{}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("operationid"); len(v) > 0 {
			ev.Metadata.OperationId = v[0]
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		ev.Metadata.RemoteAddr = p.Addr.String()
	}
	return ev
}
