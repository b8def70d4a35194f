package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/imbridge/imbridge/auth"
)

// token: `imbridge token new` makes a subscriber token and prints the configuration lines that
// hold its hash; `imbridge token hash` hashes a secret read from standard input (OpenIM's Basic
// password or path secret) for the configuration.
func token(_ context.Context, args []string, stdin io.Reader, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("token: want `token new [flags]` or `token hash`")
	}
	switch args[0] {
	case "new":
		return tokenNew(args[1:], out)
	case "hash":
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return err
		}
		secret := strings.TrimRight(line, "\r\n")
		if secret == "" {
			return fmt.Errorf("token hash: give the secret on standard input")
		}
		fmt.Fprintln(out, auth.HashSecret(secret))
		return nil
	}
	return fmt.Errorf("token: unknown subcommand %q (new, hash)", args[0])
}

func tokenNew(args []string, out io.Writer) error {
	fs := newFlagSet("token new", "[flags]")
	name := fs.String("name", "", "subscriber name (required): shows in logs and errors")
	var sc auth.Scopes
	var groups, sources, kinds, commands, groupIDs listFlag
	fs.Var(&groups, "groups", `consumer groups it may join ("*": any)`)
	fs.Var(&sources, "sources", "sources it may receive: openim, tencent (default any)")
	fs.Var(&kinds, "kinds", "event kinds it may receive: raw, group_info_changed, member_quit (default any)")
	fs.Var(&commands, "commands", "commands it may receive (default any)")
	fs.Var(&groupIDs, "group-ids", "IM group ids it may receive (default any)")
	fs.BoolVar(&sc.Tail, "tail", false, "it may open live tails")
	fs.BoolVar(&sc.Decide, "decide", false, "it may decide before-callbacks")
	fs.BoolVar(&sc.Post, "post", false, "it may post callbacks over gRPC")
	fs.BoolVar(&sc.Admin, "admin", false, "it may manage consumer groups")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return fmt.Errorf("token new: --name is required")
	}
	sc.Groups, sc.Sources, sc.Kinds, sc.Commands, sc.GroupIDs = groups, sources, kinds, commands, groupIDs
	tok, sum := auth.NewToken()
	sub := auth.Subscriber{Name: *name, TokenSHA256: sum, Scopes: sc}
	if _, err := auth.New(auth.Config{Subscribers: []auth.Subscriber{sub}}); err != nil {
		return err
	}
	entry, err := yaml.Marshal([]auth.Subscriber{sub})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "token (give it to the service as \"authorization: Bearer <token>\"; it is kept nowhere else):\n%s\n\n", tok)
	fmt.Fprintf(out, "add to subscribers: in the --config file:\n%s", entry)
	return nil
}
