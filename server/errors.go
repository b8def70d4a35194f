package server

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var errMissingCommand = status.Error(codes.InvalidArgument, "missing callback command")

// errLogUnavailable is what an IM server is told when its event could not be stored: the cause (a
// NATS error naming subjects and connections) is the operator's business and goes to the log.
var errLogUnavailable = status.Error(codes.Unavailable, "event log unavailable: the callback was not stored, try again")

// errPublishBudget: the log did not acknowledge an event within its publish budget
// (Options.PublishTimeout, or a before-callback's deadline). It may still be stored.
var errPublishBudget = errors.New("the event log did not acknowledge the write in time")

// errLogSlow is what an IM server is told on errPublishBudget.
var errLogSlow = status.Error(codes.Unavailable, "event log did not acknowledge the callback in time: it may not be stored, try again")

// errLogFull is errLogUnavailable when the log has no room (eventlog.ErrFull).
var errLogFull = status.Error(codes.Unavailable, "event log full: the callback was not stored, try again later")

// MaxCommandBytes bounds a command name. Real ones are under 60 bytes; the name becomes a token of a
// NATS subject, and a subject longer than NATS's control line would break the connection to the log.
const MaxCommandBytes = 128

// checkCommand refuses a command name that is no vendor's: too long, or with characters no command
// has (letters, digits, ".", "_" and "-" only).
func checkCommand(cmd string) error {
	if len(cmd) > MaxCommandBytes {
		return status.Errorf(codes.InvalidArgument, "command name of %d bytes: the longest accepted is %d", len(cmd), MaxCommandBytes)
	}
	for i := 0; i < len(cmd); i++ {
		if c := cmd[i]; !tokenByte(c) && c != '.' {
			return status.Errorf(codes.InvalidArgument, "command name %q: only letters, digits, '.', '_' and '-' are accepted", cmd)
		}
	}
	return nil
}

// errTooLarge: an event that does not fit in one event log message. The gateway answers it with 413.
func errTooLarge(size, limit int) error {
	return status.Errorf(codes.ResourceExhausted, "callback too large to store: its event takes %d bytes, the event log takes at most %d", size, limit)
}

func missingField(name string) error {
	return status.Errorf(codes.InvalidArgument, "missing field %s", name)
}
