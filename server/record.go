package server

import (
	"encoding/binary"
	"errors"
	"strconv"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"
)

// A log record holds one event, or several that arrived together (see committer). A single event is
// stored as a plain Event message. Several are stored in one record with recordEventsHeader set to
// their count and, as payload, each Event's bytes as field 1 of a protobuf message: the encoding of
// `message EventRecord { repeated bytes events = 1; }`. Storing them together saves the log's
// per-message work (parse, store, write, acknowledgement, delivery) for all but one of them.
const recordEventsHeader = "Imbridge-Events"

// maxRecordBytes keeps a record well under NATS's default 1 MiB message limit (and under the log's
// limit when that is lower: see committer). recordFraming is the most an event's framing in a record
// takes: a tag and a length.
const (
	maxRecordBytes = 256 << 10
	recordFraming  = 1 + binary.MaxVarintLen32
)

// appendRecordEvent adds one encoded Event to a record's payload.
func appendRecordEvent(b, event []byte) []byte {
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, event)
}

var errBadRecord = errors.New("malformed event record")

// recordEvents returns the encoded events a log message holds. The message is outside input (see
// validate.go): the count in its header is believed only as far as the payload can hold that many
// events (each takes at least two bytes, a tag and a length), so no header makes it allocate more
// than the message itself.
func recordEvents(hdr nats.Header, data []byte) ([][]byte, error) {
	n := hdr.Get(recordEventsHeader)
	if n == "" {
		return [][]byte{data}, nil
	}
	want, err := strconv.Atoi(n)
	if err != nil || want < 1 || want > len(data)/2 {
		return nil, errBadRecord
	}
	out := make([][]byte, 0, want)
	for len(data) > 0 {
		num, typ, l := protowire.ConsumeTag(data)
		if l < 0 || num != 1 || typ != protowire.BytesType {
			return nil, errBadRecord
		}
		data = data[l:]
		ev, l := protowire.ConsumeBytes(data)
		if l < 0 {
			return nil, errBadRecord
		}
		out = append(out, ev)
		data = data[l:]
	}
	if len(out) != want {
		return nil, errBadRecord
	}
	return out, nil
}
