package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

const groupsUsage = `list | show NAME | delete NAME [--force] | reset NAME (--to-seq N | --to-time T | --to-new)

  list     every consumer group: settings, members connected to that instance, backlog (in records)
  show     one group, as JSON
  delete   delete a group and its position; --force cuts off members connected
  reset    move a group: --to-seq N (a stream sequence), --to-time T (RFC 3339, or a duration
           ago: 2h), --to-new (only events stored from now on)`

// groups runs the AdminService from the command line.
func groups(ctx context.Context, args []string, out io.Writer) error {
	verb, args, err := subcommand("groups", groupsUsage, args, out)
	if err != nil {
		return err
	}
	fs := newFlagSet("groups", groupsUsage)
	dial := grpcClientFlags(fs)
	force := fs.Bool("force", false, "delete: even with members connected")
	toSeq := fs.Uint64("to-seq", 0, "reset: to this stream sequence")
	toTime := fs.String("to-time", "", "reset: to the first record stored at or after this time (RFC 3339, or a duration ago: 2h)")
	toNew := fs.Bool("to-new", false, "reset: to the log's end")
	// The group name may come before or after the flags: imbridge groups reset mods --to-new.
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return fmt.Errorf("groups %s: one group at a time, not %q", verb, rest)
	}
	var name string
	if len(rest) == 1 {
		name = rest[0]
	}
	if verb != "list" && name == "" {
		return fmt.Errorf("groups %s: which group?", verb)
	}
	ctx, conn, err := dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := pb.NewAdminServiceClient(conn)
	switch verb {
	case "list":
		resp, err := c.ListGroups(ctx, &pb.ListGroupsRequest{})
		if err != nil {
			return err
		}
		return printGroups(out, resp.GetGroups())
	case "show":
		g, err := c.GetGroup(ctx, &pb.GetGroupRequest{Name: name})
		if err != nil {
			return err
		}
		return printJSON(out, g)
	case "delete":
		if _, err := c.DeleteGroup(ctx, &pb.DeleteGroupRequest{Name: name, Force: *force}); err != nil {
			return err
		}
		_, err := fmt.Fprintf(out, "deleted %s\n", name)
		return err
	case "reset":
		req := &pb.ResetGroupRequest{Name: name}
		switch {
		case *toSeq > 0 && *toTime == "" && !*toNew:
			req.To = &pb.ResetGroupRequest_Sequence{Sequence: *toSeq}
		case *toTime != "" && *toSeq == 0 && !*toNew:
			t, err := parseWhen(*toTime, time.Now())
			if err != nil {
				return err
			}
			req.To = &pb.ResetGroupRequest_Time{Time: timestamppb.New(t)}
		case *toNew && *toSeq == 0 && *toTime == "":
			req.To = &pb.ResetGroupRequest_New{New: true}
		default:
			return errors.New("groups reset: give one of --to-seq, --to-time, --to-new")
		}
		g, err := c.ResetGroup(ctx, req)
		if err != nil {
			return err
		}
		return printJSON(out, g)
	}
	return fmt.Errorf("groups %s: %w; want %s", verb, flag.ErrHelp, groupsUsage)
}

// parseWhen reads a time as RFC 3339, or as a duration before now ("2h", "90m").
func parseWhen(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-12-01T08:00:00Z) or a duration ago (2h)", s)
	}
	return t, nil
}

func printGroups(out io.Writer, groups []*pb.Group) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tDECIDE\tMEMBERS HERE\tPENDING\tUNACKED\tREDELIVERED\tACK FLOOR\tORDER\tFILTER")
	for _, g := range groups {
		filter, _ := protojson.Marshal(g.GetFilter())
		order := "-"
		if g.GetOrder() == pb.Order_ORDER_IM_GROUP {
			order = "im-group"
		}
		fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", g.GetName(), g.GetDecide(), g.GetMembersHere(),
			g.GetPendingRecords(), g.GetUnackedRecords(), g.GetRedeliveredRecords(), strconv.FormatUint(g.GetAckFloorSequence(), 10), order, filter)
	}
	return tw.Flush()
}

func printJSON(out io.Writer, g proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(g)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", b)
	return err
}
