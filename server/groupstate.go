package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A consumer group's consumer keeps its state in the log's memory (ConsumerConfig.MemoryStorage):
// a file-backed consumer rewrites its state file up to ten times a second while it is busy, and
// with 200 busy groups that took half the bridge's CPU, ahead of the callbacks (issue 18's profile).
// What a group needs to come back is kept in the log's groups bucket (eventlog.GroupsBucket) as a
// groupRecord: its consumer's configuration, and its ack floor, written within floorInterval of an
// ack that moved it. When the log lost the consumer (the embedded server restarted with the bridge;
// every node of a cluster restarted), the next member to join, or the bridge's periodic check,
// brings it back from the record: it starts again after the floor written last, so what was acked
// after that comes again (delivery is at least once), and nothing stored is skipped. Counts of
// deliveries restart with it.
//
// A replicated memory consumer survives the loss of some of its nodes: its replicas hold its state.

// floorInterval is how long after an ack a group's floor is written at the latest.
const floorInterval = time.Second

// restoreInterval is how often the bridge looks for groups whose consumer the log lost.
const restoreInterval = 30 * time.Second

// groupRecord is a group's entry in the groups bucket.
type groupRecord struct {
	Config jetstream.ConsumerConfig `json:"config"`
	// Floor: every record of the stream up to this sequence was acked by the group, or is not for it.
	Floor uint64 `json:"floor"`
}

// groupStore writes and reads the groups bucket.
type groupStore struct {
	s  *Server
	kv jetstream.KeyValue

	moved  sync.Map       // group name → *atomic.Bool: acked since its floor was written; groups with members here
	writes sync.WaitGroup // untrack's

	mu      sync.Mutex
	written map[string]uint64 // the floor written last, by group; guarded by mu
}

func newGroupStore(s *Server, kv jetstream.KeyValue) *groupStore {
	return &groupStore{s: s, kv: kv, written: map[string]uint64{}}
}

// run writes the floors of groups acked on here and brings back lost groups, until ctx ends.
func (g *groupStore) run(ctx context.Context) {
	g.restoreAll(ctx)
	floors := time.NewTicker(floorInterval)
	defer floors.Stop()
	restores := time.NewTicker(restoreInterval)
	defer restores.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-floors.C:
			g.moved.Range(func(k, v any) bool {
				if v.(*atomic.Bool).Swap(false) {
					_ = g.writeFloor(ctx, k.(string), false)
				}
				return ctx.Err() == nil
			})
		case <-restores.C:
			g.restoreAll(ctx)
		}
	}
}

// track notes that group has a member here: its acks move its floor.
func (g *groupStore) track(group string) {
	g.moved.LoadOrStore(group, new(atomic.Bool))
}

// untrack is track's end, when the group's last member here left: its floor is written now (wait
// waits for that).
func (g *groupStore) untrack(group string) {
	g.moved.Delete(group)
	g.writes.Go(func() { _ = g.writeFloor(context.Background(), group, false) })
}

// wait waits for the floors being written, until ctx ends.
func (g *groupStore) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { g.writes.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// acked notes an ack of one of group's records.
func (g *groupStore) acked(group string) {
	if v, ok := g.moved.Load(group); ok {
		v.(*atomic.Bool).Store(true)
	}
}

// writeFloor writes group's record with its consumer's ack floor, if that moved forward since it
// was written last (or at all, with force: after a reset). A consumer the log keeps on file is
// left alone: it comes back by itself.
func (g *groupStore) writeFloor(ctx context.Context, group string, force bool) error {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	c, err := g.s.log.JetStream().Consumer(ctx, g.s.log.Stream(), group)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil // deleted, or lost: its record stays as it was
	}
	if err != nil {
		g.s.logger.Warn("consumer group's floor not written", "group", group, "err", err)
		return err
	}
	info := c.CachedInfo()
	if !info.Config.MemoryStorage {
		return nil
	}
	floor := info.AckFloor.Stream
	g.mu.Lock()
	stale := force || floor > g.written[group]
	g.mu.Unlock()
	if !stale {
		return nil
	}
	if err := g.put(ctx, group, info.Config, floor); err != nil {
		g.s.logger.Warn("consumer group's floor not written", "group", group, "floor", floor, "err", err)
		return err
	}
	return nil
}

// put writes group's record.
func (g *groupStore) put(ctx context.Context, group string, cfg jetstream.ConsumerConfig, floor uint64) error {
	for k := range cfg.Metadata {
		if strings.HasPrefix(k, "_nats.") { // the server's own, set again on creation
			delete(cfg.Metadata, k)
		}
	}
	b, err := json.Marshal(groupRecord{Config: cfg, Floor: floor})
	if err != nil {
		return err
	}
	if _, err := g.kv.Put(ctx, group, b); err != nil {
		return err
	}
	g.mu.Lock()
	g.written[group] = floor
	g.mu.Unlock()
	return nil
}

// toMemory moves a group's consumer from the log's files to its memory: its record first, so that
// the group comes back (restoreAll) if the log takes the removal and not the creation. What was
// acked past the floor comes again.
func (g *groupStore) toMemory(ctx context.Context, cfg jetstream.ConsumerConfig, floor uint64) error {
	cfg.MemoryStorage = true
	group := cfg.Durable
	if err := g.put(ctx, group, cfg, floor); err != nil {
		return status.Errorf(codes.Unavailable, "consumer group %s: its record: %v", group, err)
	}
	if err := g.s.log.JetStream().DeleteConsumer(ctx, g.s.log.Stream(), group); err != nil {
		return status.Errorf(codes.Unavailable, "consumer group %s: %v", group, err)
	}
	_, err := g.restore(ctx, group)
	return err
}

// has tells whether group has a record.
func (g *groupStore) has(ctx context.Context, group string) (bool, error) {
	_, err := g.kv.Get(ctx, group)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, logError(err)
	}
	return true, nil
}

// forget removes group's record (the group is deleted).
func (g *groupStore) forget(ctx context.Context, group string) error {
	g.mu.Lock()
	delete(g.written, group)
	g.mu.Unlock()
	if err := g.kv.Purge(ctx, group); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	return nil
}

// restore brings back group's consumer from its record. It returns nil, nil when there is none.
func (g *groupStore) restore(ctx context.Context, group string) (jetstream.Consumer, error) {
	e, err := g.kv.Get(ctx, group)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "consumer group %s: its record: %v", group, err)
	}
	rec, err := readGroupRecord(group, e.Value())
	if err != nil {
		g.s.metrics.rejected.WithLabelValues(rejectGroup).Inc()
		return nil, status.Errorf(codes.FailedPrecondition, "consumer group %s: %v (delete the group to start it again: imbridge groups delete %s)", group, err, group)
	}
	cfg := rec.Config
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, rec.Floor+1, nil
	c, err := g.s.log.JetStream().CreateConsumer(ctx, g.s.log.Stream(), cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) { // brought back meanwhile, by another instance
		c, err = g.s.log.JetStream().Consumer(ctx, g.s.log.Stream(), group)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "consumer group %s: %v", group, err)
	}
	// The embedded log loses every group when it restarts with the bridge: not worth a warning.
	g.s.logger.Info("consumer group brought back from its record (what it acked past its floor comes again)", "group", group, "floor", rec.Floor)
	return c, nil
}

// restoreAll brings back every group whose consumer the log lost.
func (g *groupStore) restoreAll(ctx context.Context) {
	js, stream := g.s.log.JetStream(), g.s.log.Stream()
	keys, err := g.kv.ListKeys(ctx)
	if err != nil {
		g.s.logger.Warn("consumer groups not checked", "err", err)
		return
	}
	defer func() { _ = keys.Stop() }()
	for group := range keys.Keys() {
		_, err := js.Consumer(ctx, stream, group)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			_, err = g.restore(ctx, group)
		}
		if err != nil && ctx.Err() == nil {
			g.s.logger.Warn("consumer group not checked", "group", group, "err", err)
		}
	}
}

// readGroupRecord decodes and checks group's record as read back from the log.
func readGroupRecord(group string, b []byte) (*groupRecord, error) {
	rec := new(groupRecord)
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("unreadable record: %w", err)
	}
	if rec.Config.Durable != group || !rec.Config.MemoryStorage || rec.Config.AckPolicy != jetstream.AckExplicitPolicy {
		return nil, fmt.Errorf("record of another consumer (durable %q, memory %v, ack policy %v)", rec.Config.Durable, rec.Config.MemoryStorage, rec.Config.AckPolicy)
	}
	if _, err := settingsOf(rec.Config); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	return rec, nil
}
