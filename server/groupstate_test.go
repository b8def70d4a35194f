package server

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// FuzzGroupRecord: a group's record is read back from the log, which others may write: whatever it
// holds, it is refused with an error or read as a record of that group, in memory, with settings
// the bridge can use.
func FuzzGroupRecord(f *testing.F) {
	good, _ := json.Marshal(groupRecord{Config: groupConfig(&pb.Subscription{Group: "g", Decide: true}, 5*time.Second), Floor: 41})
	f.Add("g", good)
	f.Add("g", []byte(`{"config":{"durable_name":"g","mem_storage":true,"ack_policy":"explicit","metadata":{"imbridge.filter":""}},"floor":1}`))
	f.Add("g", []byte(`{"config":{"durable_name":"g"}}`))
	f.Add("g", []byte(`null`))
	f.Add("other", good)
	f.Fuzz(func(t *testing.T, group string, b []byte) {
		rec, err := readGroupRecord(group, b)
		if err != nil {
			return
		}
		if rec.Config.Durable != group || !rec.Config.MemoryStorage || rec.Config.AckPolicy != jetstream.AckExplicitPolicy {
			t.Fatalf("record of %q read as %+v", group, rec.Config)
		}
		if _, err := settingsOf(rec.Config); err != nil {
			t.Fatalf("record read with settings the bridge cannot use: %v", err)
		}
	})
}
