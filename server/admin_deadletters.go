package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imbridge/imbridge/auth"
	"github.com/imbridge/imbridge/eventlog"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Dead-letter listing pages.
const (
	defaultDeadLetterPage = 100
	maxDeadLetterPage     = 1000
)

func (a adminService) ListDeadLetters(ctx context.Context, req *pb.ListDeadLettersRequest) (*pb.ListDeadLettersResponse, error) {
	subject := eventlog.DeadLetterPrefix + ".>"
	if g := req.GetGroup(); g != "" {
		if err := a.mayManage(ctx, g); err != nil {
			return nil, err
		}
		subject = eventlog.DeadLetterPrefix + "." + g
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = defaultDeadLetterPage
	}
	if limit > maxDeadLetterPage {
		return nil, status.Errorf(codes.InvalidArgument, "limit %d: at most %d", limit, maxDeadLetterPage)
	}
	out := &pb.ListDeadLettersResponse{}
	seq := req.GetAfterSequence()
	// A caller that may manage only some groups skips the others' letters; the scan is bounded so
	// that a page costs at most this many reads.
	for scanned := 0; scanned < 10*limit; scanned++ {
		m, err := a.s.log.DeadLetters().GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, logError(err)
		}
		seq = m.Sequence
		dl, err := a.readDeadLetter(m, false)
		if err != nil {
			continue
		}
		if auth.AllowGroupAdmin(ctx, dl.Group) != nil {
			continue
		}
		out.DeadLetters = append(out.DeadLetters, dl)
		if len(out.DeadLetters) == limit {
			break
		}
	}
	out.NextAfter = seq
	return out, nil
}

func (a adminService) GetDeadLetter(ctx context.Context, req *pb.GetDeadLetterRequest) (*pb.DeadLetter, error) {
	m, err := a.deadLetterMsg(ctx, req.GetSequence())
	if err != nil {
		return nil, err
	}
	// The caller may see the letters of the groups it manages only: checked before anything of the
	// letter is read.
	group, _ := strings.CutPrefix(m.Subject, eventlog.DeadLetterPrefix+".")
	if err := auth.AllowGroupAdmin(ctx, group); err != nil {
		return nil, err
	}
	dl, err := a.readDeadLetter(m, true)
	if err != nil {
		return nil, status.Errorf(codes.DataLoss, "%v", err)
	}
	return dl, nil
}

func (a adminService) RedriveDeadLetters(ctx context.Context, req *pb.RedriveDeadLettersRequest) (*pb.RedriveDeadLettersResponse, error) {
	group := req.GetGroup()
	if err := a.mayManage(ctx, group); err != nil {
		return nil, err
	}
	if _, err := a.info(ctx, group); err != nil {
		return nil, err
	}
	out := &pb.RedriveDeadLettersResponse{}
	err := a.eachDeadLetter(ctx, group, req.GetSequences(), func(m *jetstream.RawStreamMsg) error {
		subject, err := redriveSubject(m)
		if err != nil {
			return status.Errorf(codes.DataLoss, "%v", err)
		}
		// Stored again as a record of its own for this group alone; the message id makes a
		// redrive repeated after a failure store it once (within the log's duplicate window).
		msg := &nats.Msg{Subject: subject, Data: m.Data, Header: nats.Header{
			groupHeader:           {group},
			jetstream.MsgIDHeader: {"imbridge-redrive." + a.s.log.DeadLetters().CachedInfo().Config.Name + "." + strconv.FormatUint(m.Sequence, 10)},
		}}
		if _, err := a.s.log.Publish(ctx, msg); err != nil {
			return logError(err)
		}
		if err := a.s.log.DeadLetters().DeleteMsg(ctx, m.Sequence); err != nil {
			return logError(err)
		}
		out.Redriven++
		return nil
	})
	if out.Redriven > 0 {
		a.s.logger.Info("dead letters redriven", "group", group, "events", out.Redriven, "by", principalName(ctx))
	}
	if err != nil && out.Redriven > 0 {
		st := status.Convert(err)
		return nil, status.Errorf(st.Code(), "%d redriven, then: %s", out.Redriven, st.Message())
	}
	return out, err
}

func (a adminService) PurgeDeadLetters(ctx context.Context, req *pb.PurgeDeadLettersRequest) (*pb.PurgeDeadLettersResponse, error) {
	group := req.GetGroup()
	if err := a.mayManage(ctx, group); err != nil {
		return nil, err
	}
	out := &pb.PurgeDeadLettersResponse{}
	var err error
	if len(req.GetSequences()) == 0 {
		out.Purged, err = a.purgeSubject(ctx, eventlog.DeadLetterPrefix+"."+group)
	} else {
		err = a.eachDeadLetter(ctx, group, req.GetSequences(), func(m *jetstream.RawStreamMsg) error {
			if err := a.s.log.DeadLetters().DeleteMsg(ctx, m.Sequence); err != nil {
				return logError(err)
			}
			out.Purged++
			return nil
		})
	}
	if out.Purged > 0 {
		a.s.logger.Info("dead letters purged", "group", group, "events", out.Purged, "by", principalName(ctx))
	}
	if err != nil && out.Purged > 0 {
		st := status.Convert(err)
		return nil, status.Errorf(st.Code(), "%d purged, then: %s", out.Purged, st.Message())
	}
	return out, err
}

// mayManage checks a group name and that the caller may manage that group.
func (a adminService) mayManage(ctx context.Context, group string) error {
	if err := validGroupName(group); err != nil {
		return status.Errorf(codes.InvalidArgument, "group: %v", err)
	}
	return auth.AllowGroupAdmin(ctx, group)
}

// eachDeadLetter calls fn with each of group's dead letters at seqs (NOT_FOUND for one that is not
// the group's), or with all of them when seqs is empty.
func (a adminService) eachDeadLetter(ctx context.Context, group string, seqs []uint64, fn func(*jetstream.RawStreamMsg) error) error {
	subject := eventlog.DeadLetterPrefix + "." + group
	if len(seqs) > 0 {
		for _, seq := range seqs {
			m, err := a.deadLetterMsg(ctx, seq)
			if err != nil {
				return err
			}
			if m.Subject != subject {
				return status.Errorf(codes.NotFound, "dead letter %d is not group %s's", seq, group)
			}
			if err := fn(m); err != nil {
				return err
			}
		}
		return nil
	}
	var seq uint64
	for {
		m, err := a.s.log.DeadLetters().GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return logError(err)
		}
		seq = m.Sequence
		if err := fn(m); err != nil {
			return err
		}
	}
}

func (a adminService) deadLetterMsg(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	if seq == 0 {
		return nil, status.Error(codes.InvalidArgument, "sequence: dead letters are numbered from 1")
	}
	m, err := a.s.log.DeadLetters().GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, status.Errorf(codes.NotFound, "no dead letter %d", seq)
	}
	if err != nil {
		return nil, logError(err)
	}
	return m, nil
}

// readDeadLetter parses a dead letter, counting and logging one that cannot be read.
func (a adminService) readDeadLetter(m *jetstream.RawStreamMsg, withEvent bool) (*pb.DeadLetter, error) {
	dl, err := parseDeadLetter(m, withEvent)
	if err != nil {
		a.s.metrics.rejected.WithLabelValues(rejectDeadLetter).Inc()
		a.s.logger.Warn("unreadable dead letter", "err", err)
	}
	return dl, err
}

// purgeSubject removes the dead letters on subject and returns how many there were. It speaks the
// JetStream API itself: the client library's Purge does not return the count.
func (a adminService) purgeSubject(ctx context.Context, subject string) (uint64, error) {
	req, _ := json.Marshal(map[string]string{"filter": subject})
	name := a.s.log.DeadLetters().CachedInfo().Config.Name
	resp, err := a.s.log.Conn().RequestWithContext(ctx, jetstream.DefaultAPIPrefix+"STREAM.PURGE."+name, req)
	if err != nil {
		return 0, logError(err)
	}
	var r struct {
		Success bool   `json:"success"`
		Purged  uint64 `json:"purged"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return 0, logError(fmt.Errorf("purge %s: %w", name, err))
	}
	if r.Error != nil || !r.Success {
		desc := "refused"
		if r.Error != nil {
			desc = r.Error.Description
		}
		return 0, logError(fmt.Errorf("purge %s: %s", name, desc))
	}
	return r.Purged, nil
}
