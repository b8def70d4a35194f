package client_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/imbridge/imbridge/client"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/inprocess"
)

// A group member: each event is handed to the handler, and acked when it returns nil.
func ExampleHandlerFunc() {
	bridge, err := inprocess.Start("")
	if err != nil {
		log.Fatal(err)
	}
	defer bridge.Stop()

	c, err := client.Dial(bridge.GRPC)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quits := make(chan *pb.MemberQuit, 1)
	go c.Subscribe(ctx, client.Subscription{Group: "audit", Filter: client.Kinds(pb.EventKind_EVENT_KIND_MEMBER_QUIT)},
		client.HandlerFunc(func(ctx context.Context, ev *pb.Event) error {
			select {
			case quits <- ev.GetMemberQuit():
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}))

	if _, _, err := bridge.PostOpenIM("callbackAfterQuitGroupCommand", `{"callbackCommand":"callbackAfterQuitGroupCommand","groupID":"G1","userID":"alice"}`); err != nil {
		log.Fatal(err)
	}
	q := <-quits
	fmt.Println(q.GetUserIds(), "left", q.GetGroupId())
	// Output: [alice] left G1
}

// A decider: its verdict is the IM server's answer, here OpenIM's.
func ExampleDeciderFunc() {
	bridge, err := inprocess.Start("")
	if err != nil {
		log.Fatal(err)
	}
	defer bridge.Stop()

	c, err := client.Dial(bridge.GRPC)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subscribed := make(chan struct{}, 1)
	sub := client.Subscription{
		Group:        "names",
		Filter:       client.Commands("callbackBeforeSetGroupInfoExCommand"),
		OnSubscribed: func() { subscribed <- struct{}{} },
	}
	go c.Subscribe(ctx, sub, client.DeciderFunc(func(ctx context.Context, ev *pb.Event) (*pb.Verdict, error) {
		if name, ok := client.ChangedGroupName(ev); ok && strings.Contains(name, "spam") {
			return client.Refuse(4001, "this group name is not allowed"), nil
		}
		return client.Allow(), nil
	}))
	<-subscribed

	for _, name := range []string{"book club", "spam town"} {
		_, answer, err := bridge.PostOpenIM("callbackBeforeSetGroupInfoExCommand", `{"callbackCommand":"callbackBeforeSetGroupInfoExCommand","groupID":"G1","groupName":"`+name+`"}`)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: nextCode %v errCode %v %q\n", name, answer["nextCode"], answer["errCode"], answer["errMsg"])
	}
	// Output:
	// book club: nextCode 0 errCode 0 ""
	// spam town: nextCode 1 errCode 4001 "this group name is not allowed"
}
