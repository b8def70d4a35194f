package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
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
	// Config is the consumer's configuration when the record was written; its settings (metadata)
	// are what a group brought back takes (settingsOf), the rest is built again (groupConfig).
	Config jetstream.ConsumerConfig `json:"config"`
	// Floor: every record of the stream up to this sequence was acked by the group, or is not for it.
	Floor uint64 `json:"floor"`
}

// groupStore writes and reads the groups bucket.
//
// Writers race: instances write the floors of the groups their members ack, admins reset and
// delete groups. A record is only ever changed with the revision it was read at (kv.Update), read
// before the consumer's state: a write based on the consumer's state from before a reset or a
// delete was read at a revision from before it too, and fails once the reset's or the delete's own
// write has landed. Only the group's creation creates a record: a deleted group's is not written
// again.
type groupStore struct {
	s  *Server
	kv jetstream.KeyValue

	moved  sync.Map       // group name → *atomic.Bool: acked, or its last write to be checked again
	writes sync.WaitGroup // untrack's
}

func newGroupStore(s *Server, kv jetstream.KeyValue) *groupStore {
	return &groupStore{s: s, kv: kv}
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
				moved := v.(*atomic.Bool)
				if moved.Swap(false) {
					// Acks are sent without waiting: the last ones may reach the log after its state
					// was read. A group whose floor moved is read again on the next tick, until
					// it stays; a write that failed is tried again.
					if wrote, err := g.writeFloor(ctx, k.(string)); wrote || err != nil {
						moved.Store(true)
					}
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

// untrack is called when the group's last member here left: its floor is written now (wait waits
// for that), and checked again on the next tick.
func (g *groupStore) untrack(group string) {
	g.acked(group)
	g.writes.Go(func() { _, _ = g.writeFloor(context.Background(), group) })
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

// errRecordMoved: the record changed between its read and its write.
var errRecordMoved = errors.New("the group's record changed meanwhile")

// writeFloor brings group's record up to its consumer: its ack floor and settings. It writes
// nothing for a group with no record (deleted, or on file: it comes back by itself) or whose
// consumer is gone, and reports whether it wrote.
func (g *groupStore) writeFloor(ctx context.Context, group string) (wrote bool, err error) {
	return g.write(ctx, group, nil, false)
}

// write is writeFloor, with floor instead of the consumer's ack floor when it is set, and with
// force, writing even what the record holds already: a new revision, so that writers that read
// the consumer before the change fail.
func (g *groupStore) write(ctx context.Context, group string, floor *uint64, force bool) (wrote bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	defer func() {
		if err != nil && !errors.Is(err, errRecordMoved) {
			g.s.logger.Warn("consumer group's record not written", "group", group, "err", err)
		}
	}()
	e, err := g.kv.Get(ctx, group) // first: see groupStore
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c, err := g.s.log.JetStream().Consumer(ctx, g.s.log.Stream(), group)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil // lost: its record stays as it was, to bring it back
	}
	if err != nil {
		return false, err
	}
	info := c.CachedInfo()
	if !info.Config.MemoryStorage {
		return false, nil
	}
	b, err := encodeRecord(info.Config, cmp.Or(floor, &info.AckFloor.Stream))
	if err != nil {
		return false, err
	}
	if !force && string(b) == string(e.Value()) {
		return false, nil
	}
	if _, err := g.kv.Update(ctx, group, b, e.Revision()); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, errRecordMoved
		}
		return false, err
	}
	return true, nil
}

// sync writes group's record after a change an admin or a member asked for: new settings, or a
// reset to floor (nil: the consumer's floor). It tries again while other writers get in between.
// (The log answers a reset before the consumer's state shows it: the floor is the one asked for.)
func (g *groupStore) sync(ctx context.Context, group string, floor *uint64) error {
	var err error
	for range 5 {
		if _, err = g.write(ctx, group, floor, true); !errors.Is(err, errRecordMoved) {
			return err
		}
	}
	return err
}

func encodeRecord(cfg jetstream.ConsumerConfig, floor *uint64) ([]byte, error) {
	cfg.Metadata = maps.Clone(cfg.Metadata)
	for k := range cfg.Metadata {
		if strings.HasPrefix(k, "_nats.") { // the server's own
			delete(cfg.Metadata, k)
		}
	}
	return json.Marshal(groupRecord{Config: cfg, Floor: *floor})
}

// create writes a new group's record (put: also over what a deleted group left).
func (g *groupStore) create(ctx context.Context, cfg jetstream.ConsumerConfig, floor uint64) error {
	b, err := encodeRecord(cfg, &floor)
	if err != nil {
		return err
	}
	_, err = g.kv.Put(ctx, cfg.Durable, b)
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

// toMemory moves a group's consumer from the log's files to its memory: its record first, so that
// the group comes back (restoreAll) if the log takes the removal and not the creation. What was
// acked past the floor comes again.
func (g *groupStore) toMemory(ctx context.Context, cfg jetstream.ConsumerConfig, floor uint64) error {
	cfg.MemoryStorage = true
	group := cfg.Durable
	if err := g.create(ctx, cfg, floor); err != nil {
		return status.Errorf(codes.Unavailable, "consumer group %s: its record: %v", group, err)
	}
	if err := g.s.log.JetStream().DeleteConsumer(ctx, g.s.log.Stream(), group); err != nil {
		return status.Errorf(codes.Unavailable, "consumer group %s: %v", group, err)
	}
	_, err := g.restore(ctx, group)
	return err
}

// forget removes group's record (the group is deleted). Writers holding an older revision fail.
func (g *groupStore) forget(ctx context.Context, group string) error {
	if err := g.kv.Purge(ctx, group); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	return nil
}

// restore brings back group's consumer from its record. It returns nil, nil when there is none.
func (g *groupStore) restore(ctx context.Context, group string) (jetstream.Consumer, error) {
	js, stream := g.s.log.JetStream(), g.s.log.Stream()
	e, err := g.kv.Get(ctx, group)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "consumer group %s: its record: %v", group, err)
	}
	settings, floor, err := readGroupRecord(group, e.Value())
	if err != nil {
		g.s.metrics.rejected.WithLabelValues(rejectGroup).Inc()
		return nil, status.Errorf(codes.FailedPrecondition, "consumer group %s: %v (delete the group to start it again: imbridge groups delete %s)", group, err, group)
	}
	cfg := groupConfig(settings, g.s.failoverWait)
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, floor+1, nil
	c, err := js.CreateConsumer(ctx, stream, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) { // brought back meanwhile, by another instance
		c, err = js.Consumer(ctx, stream, group)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "consumer group %s: %v", group, err)
	}
	// Deleted meanwhile (its record first): the group stays deleted.
	if _, err := g.kv.Get(ctx, group); errors.Is(err, jetstream.ErrKeyNotFound) {
		_ = js.DeleteConsumer(context.WithoutCancel(ctx), stream, group)
		return nil, nil
	}
	// The embedded log loses every group when it restarts with the bridge: not worth a warning.
	g.s.logger.Info("consumer group restored from its record (the log keeps groups in memory: normal after a restart)", "group", group, "floor", floor)
	return c, nil
}

// restoreAll brings back every group whose consumer the log lost.
func (g *groupStore) restoreAll(ctx context.Context) {
	js, stream := g.s.log.JetStream(), g.s.log.Stream()
	keys, err := g.kv.ListKeys(ctx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) {
			g.s.logger.Warn("consumer groups not checked", "err", err)
		}
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

// readGroupRecord reads group's record as read back from the log: the group's settings, and its
// floor. Only the settings are taken from it: the consumer is built again from them.
func readGroupRecord(group string, b []byte) (*pb.Subscription, uint64, error) {
	rec := new(groupRecord)
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, 0, fmt.Errorf("unreadable record: %w", err)
	}
	if rec.Config.Durable != group {
		return nil, 0, fmt.Errorf("record of another consumer (%q)", rec.Config.Durable)
	}
	if rec.Floor == math.MaxUint64 {
		return nil, 0, fmt.Errorf("record floor %d: past any sequence", rec.Floor)
	}
	settings, err := settingsOf(rec.Config)
	if err != nil {
		return nil, 0, fmt.Errorf("record: %w", err)
	}
	settings.Group = group
	return settings, rec.Floor, nil
}
