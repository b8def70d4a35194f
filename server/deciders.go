package server

import (
	"sync"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// deciders knows which decider groups have members connected to this instance, and their filters.
// A before-callback waits for every decider group whose filter matches it.
type deciders struct {
	mu      sync.Mutex
	members map[string]map[uint64]*pb.EventFilter // group -> member id -> filter; guarded by mu
	nextID  uint64                                // guarded by mu
}

func newDeciders() *deciders {
	return &deciders{members: map[string]map[uint64]*pb.EventFilter{}}
}

// add registers a member and returns the function that removes it.
func (d *deciders) add(group string, f *pb.EventFilter) (remove func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nextID++
	id := d.nextID
	if d.members[group] == nil {
		d.members[group] = map[uint64]*pb.EventFilter{}
	}
	d.members[group][id] = f
	return func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		delete(d.members[group], id)
		if len(d.members[group]) == 0 {
			delete(d.members, group)
		}
	}
}

// matching returns the groups with a connected member whose filter matches ev.
func (d *deciders) matching(ev *pb.Event) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for g, ms := range d.members {
		for _, f := range ms {
			if matches(f, ev) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
