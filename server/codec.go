package server

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Events are delivered as they are stored. A stored event already is an encoded Event; its
// SubscribeResponse is that, framed as field 2 (event), with field 2 of the Event (sequence)
// appended, which protobuf decoders read like any other field. Sending the frame as is skips
// decoding the event and encoding it again, per event and per group.

// preEncoded is a message already in wire form.
type preEncoded mem.BufferSlice

// codec is gRPC's proto codec, except that it sends a preEncoded message as it is.
type codec struct{ encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(preEncoded); ok {
		return mem.BufferSlice(p), nil
	}
	return c.CodecV2.Marshal(v)
}

// GRPCServerOptions are the options a gRPC server needs to serve this package's services.
//
// Fixed flow-control windows turn off grpc-go's bandwidth estimation and its pings, which cost
// syscalls when acks arrive one at a time (moderate load): at 2,000 verdicts/s, perf stat counted
// 2 fewer reads and 2 fewer context switches per request. Subscribers send acks and verdicts, a few
// dozen bytes each, so 1 MiB is never the limit.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec{encoding.GetCodecV2("proto")}),
		grpc.InitialWindowSize(inboundWindow),
		grpc.InitialConnWindowSize(inboundWindow),
	}
}

// eventResponse frames a stored event as a SubscribeResponse, without copying the event.
func eventResponse(event []byte, seq uint64) preEncoded {
	var seqField []byte
	if seq != 0 {
		seqField = protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), seq)
	}
	head := protowire.AppendTag(make([]byte, 0, 16), 2, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(event)+len(seqField)))
	return preEncoded{mem.SliceBuffer(head), mem.SliceBuffer(event), mem.SliceBuffer(seqField)}
}

const inboundWindow = 1 << 20
