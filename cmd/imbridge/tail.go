package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

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
	dial := grpcClientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
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
	ctx, conn, err := dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return printEvents(ctx, pb.NewEventServiceClient(conn), &pb.Subscription{Group: *group, Filter: filter}, os.Stdout)
}

// printEvents subscribes and writes each event as one protojson line, acking it when in a group.
func printEvents(ctx context.Context, c pb.EventServiceClient, sub *pb.Subscription, w io.Writer) error {
	stream, err := c.Subscribe(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}}); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled && ctx.Err() != nil {
				return nil
			}
			return err
		}
		ev := resp.GetEvent()
		if ev == nil {
			continue
		}
		line, err := protojson.Marshal(ev)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "%s\n", line); err != nil {
			return err
		}
		if sub.Group != "" {
			if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{EventId: ev.Id}}}); err != nil {
				return err
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
