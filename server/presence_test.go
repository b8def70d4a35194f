package server

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// TestPresence: what one instance says, another reads: members elsewhere, and decider groups whose
// filter matches a callback; an instance that says it has nothing is forgotten.
func TestPresence(t *testing.T) {
	log := openLog(t)
	here, err := newPresence(log.Conn(), "here", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	there, err := newPresence(log.Conn(), "there", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	leave := there.join(&pb.Subscription{Group: "mod", Decide: true, Filter: &pb.EventFilter{Commands: []string{"callbackBeforeSetGroupInfoExCommand"}}})
	there.join(&pb.Subscription{Group: "audit"})
	there.join(&pb.Subscription{Group: "audit"})
	there.say(false)
	if err := log.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	waitPresence(t, func() bool { return here.elsewhere("audit") == 2 })
	if n := here.elsewhere("mod"); n != 1 {
		t.Errorf("mod elsewhere: %d; want 1", n)
	}
	match := &pb.Event{Command: "callbackBeforeSetGroupInfoExCommand"}
	if got := here.deciding(match, []string{"local"}); len(got) != 2 || got[1] != "mod" {
		t.Errorf("deciding a matching event: %v; want [local mod]", got)
	}
	if got := here.deciding(&pb.Event{Command: "other"}, nil); len(got) != 0 {
		t.Errorf("deciding an event the filter refuses: %v; want none", got)
	}
	if got := here.deciding(match, []string{"mod"}); len(got) != 1 {
		t.Errorf("deciding with mod known here too: %v; want it once", got)
	}
	leave()
	there.say(true)
	waitPresence(t, func() bool { return here.elsewhere("audit") == 0 })
}

func waitPresence(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() { // the message arrives on the connection's own goroutine: nothing to wait on
		if time.Now().After(deadline) {
			t.Fatal("presence not seen")
		}
		time.Sleep(time.Millisecond)
	}
}

// FuzzPresence: another instance's message is outside input (whoever may publish on the presence
// subjects): reading it never panics, and what is read has valid group names and members.
func FuzzPresence(f *testing.F) {
	good, _ := json.Marshal(presenceMsg{Groups: []presenceGroup{{Name: "mod", Members: 2, Decide: true, Filter: []byte{0x12, 0x03, 'a', 'b', 'c'}}}})
	f.Add(good)
	f.Add([]byte(`{"groups":[{"name":"a.b","members":1}]}`))
	f.Add([]byte(`{"groups":[{"name":"g","members":-1}]}`))
	f.Add([]byte(`{"groups":[{"name":"g","members":1,"filter":"AAAA"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		groups, err := parsePresence(data)
		if err != nil {
			return
		}
		for name, g := range groups {
			if validGroupName(name) != nil || g.members < 1 || g.filter == nil {
				t.Fatalf("read %q: %+v", name, g)
			}
		}
	})
}
