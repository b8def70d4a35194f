package server

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var errMissingCommand = status.Error(codes.InvalidArgument, "missing callback command")

func missingField(name string) error {
	return status.Errorf(codes.InvalidArgument, "missing field %s", name)
}
