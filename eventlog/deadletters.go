package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Beside the event stream, the log keeps three smaller stores, named after it:
//   - the dead letters, a stream (<stream>_DEAD_LETTERS, subjects DeadLetterPrefix.<group>) of events
//     a consumer group gave up on, kept as long as events are;
//   - the redelivery state, a key-value bucket (<stream>_REDELIVERY) with what a group already did
//     with a log record it is to receive again (which of its events were acked, why the rest was
//     nacked), so that a record handed back with part of it acked is not delivered whole again.
//     Entries live as long as events do;
//   - the consumer groups, a key-value bucket (<stream>_GROUPS) with what the log needs to bring a
//     group back where it was (server/groupstate.go), whose consumer it holds in memory only.
const (
	// DeadLetterPrefix is the root of the dead-letter subjects.
	DeadLetterPrefix   = "imbridge.dlq"
	deadLetterSuffix   = "_DEAD_LETTERS"
	redeliverySuffix   = "_REDELIVERY"
	groupsSuffix       = "_GROUPS"
	deadLetterReplicas = 1
)

// DeadLetterStream is the name of the dead-letter stream beside the event stream.
func DeadLetterStream(stream string) string { return stream + deadLetterSuffix }

// RedeliveryBucket is the name of the key-value bucket beside the event stream.
func RedeliveryBucket(stream string) string { return stream + redeliverySuffix }

// GroupsBucket is the name of the consumer groups' key-value bucket beside the event stream.
func GroupsBucket(stream string) string { return stream + groupsSuffix }

// openStores creates or finds the dead-letter stream and the buckets. Like the event
// stream, they follow the options on the embedded server and are created if missing, never
// rewritten, on an external one.
func (l *Log) openStores(ctx context.Context, replicas int) error {
	cfg := jetstream.StreamConfig{
		Name:        DeadLetterStream(l.opts.Stream),
		Description: "imbridge: events consumer groups gave up on (imbridge dlq)",
		Subjects:    []string{DeadLetterPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      l.opts.MaxAge,
		Replicas:    replicas,
		// A dead letter is written with a message id (group, record, event): one the bridge writes
		// twice, having crashed between writing it and letting go of the record, is stored once.
		Duplicates: min(10*time.Minute, l.opts.MaxAge), // JetStream takes no window longer than MaxAge
	}
	var err error
	if l.ns != nil {
		l.dead, err = l.js.CreateOrUpdateStream(ctx, cfg)
	} else {
		l.dead, err = l.js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			l.dead, err = l.js.CreateStream(ctx, cfg)
		}
	}
	if err != nil {
		return fmt.Errorf("dead letters %s: %w", cfg.Name, err)
	}
	if l.redelivery, err = l.openBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      RedeliveryBucket(l.opts.Stream),
		Description: "imbridge: what consumer groups acked of records they get again",
		History:     1,
		TTL:         l.opts.MaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}); err != nil {
		return err
	}
	l.groups, err = l.openBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      GroupsBucket(l.opts.Stream),
		Description: "imbridge: where each consumer group is, to bring back its consumer",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	return err
}

func (l *Log) openBucket(ctx context.Context, cfg jetstream.KeyValueConfig) (kv jetstream.KeyValue, err error) {
	if l.ns != nil {
		kv, err = l.js.CreateOrUpdateKeyValue(ctx, cfg)
	} else {
		kv, err = l.js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = l.js.CreateKeyValue(ctx, cfg)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// ForgetGroup removes a group's redelivery entries: after the group is deleted or moved, what it did
// with a record before means nothing.
func (l *Log) ForgetGroup(ctx context.Context, group string) error {
	bucket := RedeliveryBucket(l.opts.Stream)
	s, err := l.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return err
	}
	return s.Purge(ctx, jetstream.WithPurgeSubject("$KV."+bucket+"."+group+".>"))
}

// DeadLetters is the dead-letter stream.
func (l *Log) DeadLetters() jetstream.Stream { return l.dead }

// Groups is the consumer groups' bucket.
func (l *Log) Groups() jetstream.KeyValue { return l.groups }

// Redelivery is the redelivery state bucket.
func (l *Log) Redelivery() jetstream.KeyValue { return l.redelivery }
