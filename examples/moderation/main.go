// Command moderation is an example internal service built on imbridge's Go client: it refuses
// group names that contain a word from its list (OpenIM's before-set-group-info callbacks) and logs
// the members who leave a group. Against `make run`:
//
//	go run ./examples/moderation
//	go run ./examples/moderation --words words.txt --bridge imbridge:9090 --token "$IMBRIDGE_TOKEN"
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/imbridge/imbridge/client"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

func main() {
	bridge := flag.String("bridge", "localhost:9090", "imbridge's gRPC address")
	token := flag.String("token", os.Getenv("IMBRIDGE_TOKEN"), "subscriber token, if the bridge asks for one (default $IMBRIDGE_TOKEN)")
	wordsFile := flag.String("words", "", "file of words not allowed in group names, one per line (default: spam, scam)")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	words := []string{"spam", "scam"}
	if *wordsFile != "" {
		var err error
		if words, err = readWords(*wordsFile); err != nil {
			logger.Error("words", "err", err)
			os.Exit(1)
		}
	}
	opts := []client.Option{client.WithErrorHandler(func(err error) { logger.Warn("imbridge", "err", err) })}
	if *token != "" {
		opts = append(opts, client.WithToken(*token))
	}
	c, err := client.Dial(*bridge, opts...)
	if err != nil {
		logger.Error("dial", "err", err)
		os.Exit(1)
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("moderating group names", "bridge", *bridge, "words", len(words))
	if err := run(ctx, c, words, logger, nil); err != nil && ctx.Err() == nil {
		logger.Error("stopped", "err", err)
		os.Exit(1)
	}
}

// run serves the two subscriptions until ctx ends; ready, if set, is called once both are
// subscribed.
func run(ctx context.Context, c *client.Client, words []string, logger *slog.Logger, ready func()) error {
	subscribed := make(chan struct{}, 2)
	onSubscribed := func() {
		select {
		case subscribed <- struct{}{}:
		default:
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		sub := client.Subscription{Group: "group-names", Filter: client.Kinds(pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED), OnSubscribed: onSubscribed}
		return c.Subscribe(ctx, sub, client.DeciderFunc(func(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
			name, ok := client.ChangedGroupName(ev)
			if !ok || ev.GetPhase() != pb.Phase_PHASE_BEFORE { // a change made already: acked
				return client.Allow(), nil
			}
			if w := badWord(name, words); w != "" {
				logger.Info("group name refused", "group", ev.GetGroupInfoChanged().GetGroupId(), "name", name, "word", w)
				return client.Refuse(4001, fmt.Sprintf("group names may not contain %q", w)), nil
			}
			return client.Allow(), nil
		}))
	})
	g.Go(func() error {
		sub := client.Subscription{Group: "member-log", Filter: client.Kinds(pb.EventKind_EVENT_KIND_MEMBER_QUIT), OnSubscribed: onSubscribed}
		return c.Subscribe(ctx, sub, client.HandlerFunc(func(ctx context.Context, ev *pb.Event) error {
			q := ev.GetMemberQuit()
			logger.Info("members left", "group", q.GetGroupId(), "users", q.GetUserIds(), "reason", q.GetReason().String(), "event", ev.Id)
			return nil
		}))
	})
	if ready != nil {
		g.Go(func() error {
			for range 2 {
				select {
				case <-subscribed:
				case <-ctx.Done():
					return nil
				}
			}
			ready()
			return nil
		})
	}
	return g.Wait()
}

// badWord is the first of words in name, case aside; "" if none.
func badWord(name string, words []string) string {
	lower := strings.ToLower(name)
	for _, w := range words {
		if w != "" && strings.Contains(lower, strings.ToLower(w)) {
			return w
		}
	}
	return ""
}

func readWords(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var words []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if w := strings.TrimSpace(sc.Text()); w != "" && !strings.HasPrefix(w, "#") {
			words = append(words, w)
		}
	}
	return words, sc.Err()
}
