package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

const dlqUsage = `list [--group G] | show SEQ | redrive --group G [SEQ...] | purge --group G [SEQ...]

  list     dead letters, oldest first: sequence, group, event, deliveries, when, reason
           (--group: one group's; --after N and --limit N page through)
  show     one dead letter with its event, as JSON
  redrive  deliver a group's dead letters (or those SEQs) to that group again, and remove them
  purge    remove a group's dead letters (or those SEQs) for good`

// dlq runs the AdminService's dead-letter methods from the command line.
func dlq(ctx context.Context, args []string, out io.Writer) error {
	verb, args, err := subcommand("dlq", dlqUsage, args, out)
	if err != nil {
		return err
	}
	fs := newFlagSet("dlq", dlqUsage)
	dial := grpcClientFlags(fs)
	group := fs.String("group", "", "the consumer group")
	after := fs.Uint64("after", 0, "list: start after this dead-letter sequence")
	limit := fs.Uint("limit", 0, "list: most dead letters shown (default 100, at most 1000)")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	var seqs []uint64
	for _, a := range rest {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return fmt.Errorf("dlq %s: %q is no dead-letter sequence", verb, a)
		}
		seqs = append(seqs, n)
	}
	switch verb {
	case "show":
		if len(seqs) != 1 {
			return errors.New("dlq show: which dead letter? (one sequence)")
		}
	case "redrive", "purge":
		if *group == "" {
			return fmt.Errorf("dlq %s: whose dead letters? (--group)", verb)
		}
	case "list":
		if len(seqs) > 0 {
			return errors.New("dlq list: takes no sequences (--after pages)")
		}
		if *limit > 1000 {
			return fmt.Errorf("dlq list: --limit %d: at most 1000", *limit)
		}
	default:
		return fmt.Errorf("dlq %s: %w; want %s", verb, flag.ErrHelp, dlqUsage)
	}
	ctx, conn, err := dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := pb.NewAdminServiceClient(conn)
	switch verb {
	case "list":
		resp, err := c.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{Group: *group, AfterSequence: *after, Limit: uint32(*limit)})
		if err != nil {
			return err
		}
		return printDeadLetters(out, resp)
	case "show":
		dl, err := c.GetDeadLetter(ctx, &pb.GetDeadLetterRequest{Sequence: seqs[0]})
		if err != nil {
			return err
		}
		return printJSON(out, dl)
	case "redrive":
		resp, err := c.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{Group: *group, Sequences: seqs})
		if resp != nil {
			fmt.Fprintf(out, "redrove %d to %s\n", resp.GetRedriven(), *group)
		}
		return err
	default: // purge
		resp, err := c.PurgeDeadLetters(ctx, &pb.PurgeDeadLettersRequest{Group: *group, Sequences: seqs})
		if resp != nil {
			fmt.Fprintf(out, "purged %d of %s\n", resp.GetPurged(), *group)
		}
		return err
	}
}

func printDeadLetters(out io.Writer, resp *pb.ListDeadLettersResponse) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tGROUP\tEVENT\tCOMMAND\tDELIVERIES\tDEAD SINCE\tREASON")
	for _, dl := range resp.GetDeadLetters() {
		reason := strings.Join(strings.Fields(dl.GetReason()), " ")
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", dl.GetSequence(), dl.GetGroup(), dl.GetEventId(), dl.GetCommand(),
			dl.GetDeliveries(), dl.GetDeadLettered().AsTime().Local().Format(time.DateTime), reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(resp.GetDeadLetters()) > 0 && resp.GetNextAfter() > 0 {
		_, err := fmt.Fprintf(out, "more: --after %d\n", resp.GetNextAfter())
		return err
	}
	return nil
}
