package server

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Role is the part of the bridge's work an instance does. Instances with different roles share one
// event log (a NATS cluster), so that an operator scales the two jobs apart: ingest instances answer
// the IM servers, whose callbacks wait on them, and deliver instances serve subscribers, whose work
// can lag. Deciders are part of the answer: they may connect to ingest instances, so that their
// traffic runs with the callbacks' and not behind the deliveries; a before-callback is decided by
// deciders connected to any instance (decider presence and verdicts go through NATS: presence.go,
// verdict.go).
type Role string

const (
	// RoleAll takes callbacks and serves subscribers: the default.
	RoleAll Role = "all"
	// RoleIngest takes callbacks (HTTP and the callback RPCs), stores them and waits for verdicts;
	// of subscribers it serves deciders only.
	RoleIngest Role = "ingest"
	// RoleDeliver serves subscribers; it takes no callback. Every role serves the AdminService.
	RoleDeliver Role = "deliver"
)

// ParseRole reads --role; "" is RoleAll.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case "":
		return RoleAll, nil
	case RoleAll, RoleIngest, RoleDeliver:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want all, ingest or deliver", s)
}

// Ingests reports whether the role takes callbacks.
func (r Role) Ingests() bool { return r != RoleDeliver }

// Delivers reports whether the role serves subscribers other than deciders.
func (r Role) Delivers() bool { return r != RoleIngest }

var (
	errNotIngest = status.Error(codes.Unavailable,
		"this instance takes no callbacks (--role deliver): point the IM server at an instance with --role ingest or all")
	errNotDeliver = status.Error(codes.FailedPrecondition,
		"this instance serves deciders only (--role ingest): subscribe at an instance with --role deliver or all")
)
