package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Presence: which consumer groups have members on which bridge instance, across every instance on
// one NATS. A callback arriving here waits for a decider connected elsewhere, and a member joining
// here with settings its group's members elsewhere do not share is refused.
//
// Each instance publishes the groups with members connected to it (how many, whether they decide,
// their filter) on presencePrefix.<instance> at once when that changes and every presenceEvery, and
// listens to the others'. An instance not heard from for presenceStale is gone (killed, or cut off
// from NATS). So a decider joining anywhere is known everywhere within a NATS round trip, and one
// that is gone is forgotten within presenceStale.
//
// Core NATS rather than a key-value bucket with TTL heartbeats: the facts are only worth anything
// while their instance is alive to say them again, so nothing needs storing; a bucket would write
// every heartbeat to disk (and to three nodes on a replicated log) and need a watcher per instance.
// What is given up: an instance that has just started knows the others only after their next
// heartbeat (at most presenceEvery), and two members with conflicting settings joining two instances
// within the same few milliseconds are not caught.
const (
	presencePrefix = "imbridge.presence"
	presenceEvery  = time.Second
	presenceStale  = 3 * presenceEvery
	// maxPresenceGroups bounds one instance's message (it serves at most --max-subscribers
	// members), maxPresenceMembers a group's members on one instance, and maxOtherInstances the
	// instances remembered: a message is outside input, and these keep what it can cost bounded.
	maxPresenceGroups  = 100000
	maxPresenceMembers = 1 << 20
	maxOtherInstances  = 1024
)

// presenceMsg is what an instance says about itself. It is outside input (parsePresence).
type presenceMsg struct {
	Groups []presenceGroup `json:"groups"`
}

type presenceGroup struct {
	Name    string `json:"name"`
	Members int    `json:"members"`
	Decide  bool   `json:"decide,omitempty"`
	Filter  []byte `json:"filter,omitempty"` // an EventFilter, protobuf (base64 in the JSON)
}

// presentGroup is a group with members on one instance.
type presentGroup struct {
	members int
	decide  bool
	filter  *pb.EventFilter
}

// presence keeps this instance's groups and what the others said of theirs.
type presence struct {
	nc       *nats.Conn
	instance string
	logger   *slog.Logger
	changed  chan struct{} // this instance's groups changed: say so now

	mu     sync.Mutex
	here   map[string]*presentGroup  // guarded by mu
	others map[string]*otherInstance // by instance; guarded by mu
}

type otherInstance struct {
	heard  time.Time
	groups map[string]presentGroup
}

func newPresence(nc *nats.Conn, instance string, logger *slog.Logger) (*presence, error) {
	p := &presence{
		nc: nc, instance: instance, logger: logger, changed: make(chan struct{}, 1),
		here: map[string]*presentGroup{}, others: map[string]*otherInstance{},
	}
	// The subscription lasts as long as the connection, and comes back with it.
	if _, err := nc.Subscribe(presencePrefix+".*", p.receive); err != nil {
		return nil, err
	}
	return p, nil
}

// run says this instance's groups when they change and every presenceEvery, until ctx ends; then
// it says it has none, so that the others forget it at once.
func (p *presence) run(ctx context.Context) {
	t := time.NewTicker(presenceEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.say(true)
			return
		case <-t.C:
		case <-p.changed:
		}
		p.say(false)
	}
}

// say publishes this instance's groups (none when leaving).
func (p *presence) say(leaving bool) {
	var msg presenceMsg
	p.mu.Lock()
	if !leaving {
		msg.Groups = make([]presenceGroup, 0, len(p.here))
		for name, g := range p.here {
			pg := presenceGroup{Name: name, Members: g.members, Decide: g.decide}
			if g.filter != nil {
				pg.Filter, _ = proto.MarshalOptions{Deterministic: true}.Marshal(g.filter)
			}
			msg.Groups = append(msg.Groups, pg)
		}
	}
	p.mu.Unlock()
	data, err := json.Marshal(msg)
	if err == nil {
		err = p.nc.Publish(presencePrefix+"."+p.instance, data)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		p.logger.Warn("presence not published: other instances may not know this one's groups", "err", err)
	}
}

// join counts a member of sub's group in here, with the group's settings, and returns the function
// that counts it out.
func (p *presence) join(sub *pb.Subscription) (leave func()) {
	p.mu.Lock()
	g := p.here[sub.Group]
	if g == nil {
		g = &presentGroup{decide: sub.Decide, filter: sub.GetFilter()}
		p.here[sub.Group] = g
	}
	g.members++
	p.mu.Unlock()
	p.poke()
	return func() {
		p.mu.Lock()
		if g.members--; g.members == 0 && p.here[sub.Group] == g {
			delete(p.here, sub.Group)
		}
		p.mu.Unlock()
		p.poke()
	}
}

func (p *presence) poke() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// receive takes another instance's message.
func (p *presence) receive(msg *nats.Msg) {
	instance, ok := strings.CutPrefix(msg.Subject, presencePrefix+".")
	if !ok || instance == p.instance {
		return
	}
	groups, err := parsePresence(msg.Data)
	if err != nil {
		p.logger.Warn("presence message not understood: ignored", "instance", instance, "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for id, o := range p.others { // forget the long gone, so that the map stays bounded
		if now.Sub(o.heard) > 10*presenceStale {
			delete(p.others, id)
		}
	}
	if len(groups) == 0 {
		delete(p.others, instance)
		return
	}
	if _, known := p.others[instance]; !known && len(p.others) >= maxOtherInstances {
		p.logger.Warn("presence of too many instances: one more ignored", "instance", instance, "most", maxOtherInstances)
		return
	}
	p.others[instance] = &otherInstance{heard: now, groups: groups}
}

// parsePresence reads another instance's message: outside input (whoever may publish on the
// presence subjects), so what does not hold together is an error, never a panic.
func parsePresence(data []byte) (map[string]presentGroup, error) {
	var msg presenceMsg
	if err := json.Unmarshal(data, &msg); err != nil {
		return nil, err
	}
	if len(msg.Groups) > maxPresenceGroups {
		return nil, fmt.Errorf("%d groups: at most %d", len(msg.Groups), maxPresenceGroups)
	}
	groups := make(map[string]presentGroup, len(msg.Groups))
	for _, g := range msg.Groups {
		if err := validGroupName(g.Name); err != nil {
			return nil, err
		}
		if g.Members < 1 || g.Members > maxPresenceMembers {
			return nil, fmt.Errorf("group %s: %d members", g.Name, g.Members)
		}
		f := new(pb.EventFilter)
		if err := proto.Unmarshal(g.Filter, f); err != nil {
			return nil, fmt.Errorf("group %s: filter: %w", g.Name, err)
		}
		groups[g.Name] = presentGroup{members: g.Members, decide: g.Decide, filter: f}
	}
	return groups, nil
}

// elsewhere is how many members group has on other instances.
func (p *presence) elsewhere(group string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	now := time.Now()
	for _, o := range p.others {
		if now.Sub(o.heard) <= presenceStale {
			n += o.groups[group].members
		}
	}
	return min(n, maxPresenceMembers) // fits an int32 (Group.members_elsewhere)
}

// deciding appends to groups the decider groups with members on other instances whose filter
// matches ev, and not in groups already.
func (p *presence) deciding(ev *pb.Event, groups []string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for _, o := range p.others {
		if now.Sub(o.heard) > presenceStale {
			continue
		}
		for name, g := range o.groups {
			if g.decide && matches(g.filter, ev) && !slices.Contains(groups, name) {
				groups = append(groups, name)
			}
		}
	}
	return groups
}
