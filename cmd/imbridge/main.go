// Command imbridge is the IM webhook bridge: `serve` runs it, `tail` prints its events, `send` posts
// a callback to it the way an IM server would.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `imbridge: one webhook URL for IM servers, typed events over gRPC for internal services.

Usage:
  imbridge serve [flags]           run the bridge (HTTP :8080, gRPC :9090, event log in ./data)
  imbridge tail [flags]            subscribe and print each event as one JSON line
  imbridge send [flags] FILE|NAME  post a callback file or a built-in example, print the answer
  imbridge token new --name NAME   make a subscriber token; prints it and the lines for --config
  imbridge token hash              print the SHA-256 of a secret read from standard input
  imbridge groups list|show|delete|reset   manage consumer groups (imbridge groups -h)
  imbridge dlq list|show|redrive|purge     dead letters: events groups gave up on (imbridge dlq -h)
  imbridge healthcheck [flags]     exit 0 if the bridge at --url is ready (for container health checks)
  imbridge version                 print the version (also --version)

Every flag has an environment twin: --http-addr is IMBRIDGE_HTTP_ADDR. "imbridge CMD -h" lists them.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(ctx, args)
	case "tail":
		err = tail(ctx, args)
	case "send":
		err = send(ctx, args, os.Stdout)
	case "token":
		err = token(ctx, args, os.Stdin, os.Stdout)
	case "groups":
		err = groups(ctx, args, os.Stdout)
	case "dlq":
		err = dlq(ctx, args, os.Stdout)
	case "healthcheck":
		err = healthcheck(ctx, args, os.Stdout)
	case "version", "--version", "-version":
		fmt.Println("imbridge", buildVersion())
		return
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "imbridge: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "imbridge:", err)
		os.Exit(1)
	}
}
