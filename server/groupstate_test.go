package server

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// FuzzGroupRecord: a group's record is read back from the log, which others may write: whatever it
// holds, it is refused with an error or read as that group's settings and a floor it can start
// after, and the consumer built from them is one of the bridge's groups (in memory, acked, pulled).
func FuzzGroupRecord(f *testing.F) {
	good, _ := json.Marshal(groupRecord{Config: groupConfig(&pb.Subscription{Group: "g", Decide: true}, 5*time.Second), Floor: 41})
	f.Add("g", good)
	f.Add("g", []byte(`{"config":{"durable_name":"g","mem_storage":true,"ack_policy":"explicit","metadata":{"imbridge.filter":""}},"floor":1}`))
	f.Add("g", []byte(`{"config":{"durable_name":"g"}}`))
	f.Add("g", []byte(`null`))
	f.Add("other", good)
	f.Add("g", []byte(`{"config":{"durable_name":"g","metadata":{"imbridge.filter":""}},"floor":18446744073709551615}`))
	f.Fuzz(func(t *testing.T, group string, b []byte) {
		settings, floor, err := readGroupRecord(group, b)
		if err != nil {
			return
		}
		if settings.Group != group || floor == math.MaxUint64 {
			t.Fatalf("record of %q read as group %q, floor %d", group, settings.Group, floor)
		}
		cfg := groupConfig(settings, 5*time.Second) // what is brought back
		if cfg.Durable != group || !cfg.MemoryStorage || cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.DeliverSubject != "" {
			t.Fatalf("record of %q brings back %+v", group, cfg)
		}
		if _, err := settingsOf(cfg); err != nil {
			t.Fatalf("brought back with settings the bridge cannot read: %v", err)
		}
	})
}
