package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imbridge/imbridge/auth"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

func tail(ctx context.Context, args []string) error {
	fs := newFlagSet("tail", "[flags]")
	group := fs.String("group", "", "consumer group (durable, events acked after printing); empty: live tail")
	var kinds, commands, sources, groupIDs listFlag
	fs.Var(&kinds, "kind", "event kinds: raw, group_info_changed, member_quit (repeatable, comma-separated)")
	fs.Var(&commands, "command", "vendor command names (repeatable, comma-separated)")
	fs.Var(&sources, "source", "openim, tencent (repeatable, comma-separated)")
	fs.Var(&groupIDs, "group-id", "IM group ids (repeatable, comma-separated)")
	from := fs.String("from", "", "start at the first event stored at or after this time (RFC 3339, or a duration ago: 2h); a live tail or a new group")
	fromSeq := fs.Uint64("from-seq", 0, "start at this stream sequence (Event.sequence); a live tail or a new group")
	ordered := fs.Bool("ordered", false, "with --group: a new group delivers the events of each IM group one at a time, in log order")
	dial := grpcClientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sub := &pb.Subscription{Group: *group, StartSequence: *fromSeq}
	if *ordered {
		sub.Order = pb.Order_ORDER_IM_GROUP
	}
	if *from != "" {
		t, err := parseWhen(*from, time.Now())
		if err != nil {
			return err
		}
		sub.StartTime = timestamppb.New(t)
	}
	filter := &pb.EventFilter{Commands: commands, GroupIds: groupIDs}
	for _, k := range kinds {
		v, ok := pb.EventKind_value["EVENT_KIND_"+upper(k)]
		if !ok {
			return fmt.Errorf("unknown kind %q", k)
		}
		filter.Kinds = append(filter.Kinds, pb.EventKind(v))
	}
	for _, s := range sources {
		v, ok := pb.Source_value["SOURCE_"+upper(s)]
		if !ok {
			return fmt.Errorf("unknown source %q", s)
		}
		filter.Sources = append(filter.Sources, pb.Source(v))
	}
	sub.Filter = filter
	ctx, conn, err := dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return followEvents(ctx, pb.NewEventServiceClient(conn), sub, os.Stdout, os.Stderr)
}

// Reconnection delays of followEvents: doubled from the first to the most, each jittered.
const (
	firstRetry = 100 * time.Millisecond
	mostRetry  = 5 * time.Second
)

// followEvents prints events as printEvents does and, when the stream breaks (the bridge restarts,
// its instance goes away, a live tail falls behind and is cut off), says so on errw and subscribes
// again. A group picks up where the log has it; a live tail resumes at the sequence of the last event
// it printed, skipping the events of that record it printed already, so it misses nothing the log
// still holds.
func followEvents(ctx context.Context, c pb.EventServiceClient, sub *pb.Subscription, w, errw io.Writer) error {
	var seen resumePoint
	wait := firstRetry
	for {
		printed, err := printEvents(ctx, c, sub, w, &seen)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.ResourceExhausted, codes.Internal, codes.Unknown, codes.DeadlineExceeded, codes.Aborted:
		default:
			return err // the subscription itself is refused: retrying does not help
		}
		if printed {
			wait = firstRetry
		}
		if sub.Group == "" && seen.seq > 0 {
			sub = proto.CloneOf(sub)
			sub.Start, sub.StartSequence, sub.StartTime = 0, seen.seq, nil
		}
		d := wait/2 + rand.N(wait/2+1)
		fmt.Fprintf(errw, "imbridge tail: %v; subscribing again in %v\n", status.Convert(err).Message(), d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
		wait = min(2*wait, mostRetry)
	}
}

// resumePoint is where a live tail is: the sequence of the last event printed and the ids printed at
// that sequence (the events of one record share it).
type resumePoint struct {
	seq uint64
	ids map[string]bool
}

func (r *resumePoint) printed(ev *pb.Event) bool {
	return ev.Sequence == r.seq && r.ids[ev.Id]
}

func (r *resumePoint) add(ev *pb.Event) {
	if ev.Sequence != r.seq {
		r.seq, r.ids = ev.Sequence, map[string]bool{}
	}
	r.ids[ev.Id] = true
}

// printEvents subscribes and writes each event as one protojson line, acking it when in a group. It
// skips events seen has printed and adds those it prints; printed reports whether it printed any.
func printEvents(ctx context.Context, c pb.EventServiceClient, sub *pb.Subscription, w io.Writer, seen *resumePoint) (printed bool, err error) {
	stream, err := c.Subscribe(ctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}}); err != nil {
		return false, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled && ctx.Err() != nil {
				return printed, nil
			}
			return printed, err
		}
		ev := resp.GetEvent()
		if ev == nil || sub.Group == "" && seen.printed(ev) {
			continue
		}
		line, err := protojson.Marshal(ev)
		if err != nil {
			return printed, err
		}
		if _, err := fmt.Fprintf(w, "%s\n", line); err != nil {
			return printed, err
		}
		printed = true
		seen.add(ev)
		if sub.Group != "" {
			if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{EventId: ev.Id}}}); err != nil {
				return printed, err
			}
		}
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		case c == '-':
			b[i] = '_'
		}
	}
	return string(b)
}

// clientTLS trusts the PEM CA certificates in caFile, or the system's when it is empty.
func clientTLS(caFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := auth.LoadCertPool(caFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// grpcClientFlags adds the flags that say how to reach the bridge's gRPC port (--server, --token,
// --tls, --ca) and returns the function that dials it once they are parsed: the connection, and ctx
// carrying the token.
func grpcClientFlags(fs *flag.FlagSet) func(context.Context) (context.Context, *grpc.ClientConn, error) {
	addr := fs.String("server", "localhost:9090", "bridge gRPC address")
	token := fs.String("token", "", "subscriber token, when the bridge asks for one (imbridge token new)")
	useTLS := fs.Bool("tls", false, "the bridge's gRPC port speaks TLS (--tls-cert)")
	ca := fs.String("ca", "", "PEM CA certificate to trust for --tls (default: the system's)")
	return func(ctx context.Context) (context.Context, *grpc.ClientConn, error) {
		if *token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
		}
		creds := insecure.NewCredentials()
		if *useTLS || *ca != "" {
			tc, err := clientTLS(*ca)
			if err != nil {
				return nil, nil, err
			}
			creds = credentials.NewTLS(tc)
		}
		conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
		return ctx, conn, err
	}
}
