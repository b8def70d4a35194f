package server

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// What the event log holds is outside input: another NATS client, an older or newer bridge, a
// restored backup or a damaged file may have written it. Events are delivered as they are stored
// (codec.go), so an event the subscriber's protobuf decoder would refuse must not be sent: it would
// end the subscriber's stream, and the redelivered event would end the next one too.
//
// Events sent as stored are checked by checkEvent: it accepts exactly what protobuf-go's Unmarshal
// of an Event accepts (well-formed wire data, valid UTF-8 in string fields, at any depth) and
// deliverable then passes (an id; timestamps in the range protojson formats, which a subscriber's
// JSON printer needs), and returns the event's id. It reads the bytes once without allocating:
// about a sixth of the cost of decoding the event (FuzzCheckEvent holds it to that specification).
// Events a member decodes anyway (to filter them) are checked by decoding and deliverable.

// wireCheck is what checkEvent needs to know of one message type: for each field number, the field's
// shape when it is sent length-delimited (the only wire type whose content can be invalid).
type wireCheck struct {
	fields    []fieldCheck // by field number; index 0 unused
	timestamp bool         // google.protobuf.Timestamp: seconds and nanos in protojson's range
}

type fieldCheck struct {
	kind   protoreflect.Kind
	packed bool       // a repeated scalar: length-delimited means packed values
	msg    *wireCheck // for a message field
	// stamp: a singular Timestamp field. Decoders merge the occurrences of a singular message
	// field, so its seconds and nanos are checked once merged, at the end of the message.
	stamp bool
}

// maxStamps bounds the singular Timestamp fields of one message type (Event has two).
const maxStamps = 4

var eventCheck = newWireCheck((&pb.Event{}).ProtoReflect().Descriptor(), map[protoreflect.FullName]*wireCheck{})

func newWireCheck(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*wireCheck) *wireCheck {
	if c := seen[md.FullName()]; c != nil {
		return c // a recursive type
	}
	c := &wireCheck{timestamp: md.FullName() == "google.protobuf.Timestamp"}
	seen[md.FullName()] = c
	fields := md.Fields()
	maxNum := 0
	for i := range fields.Len() {
		maxNum = max(maxNum, int(fields.Get(i).Number()))
	}
	c.fields = make([]fieldCheck, maxNum+1)
	stamps := 0
	for i := range fields.Len() {
		fd := fields.Get(i)
		fc := fieldCheck{kind: fd.Kind(), packed: fd.IsList() && isScalar(fd.Kind())}
		if fd.Kind() == protoreflect.MessageKind {
			fc.msg = newWireCheck(fd.Message(), seen)
			if fc.stamp = fc.msg.timestamp && !fd.IsList(); fc.stamp {
				stamps++
			}
		}
		c.fields[fd.Number()] = fc
	}
	if stamps > maxStamps {
		panic(fmt.Sprintf("%s has %d Timestamp fields; checkEvent takes %d", md.FullName(), stamps, maxStamps))
	}
	return c
}

func isScalar(k protoreflect.Kind) bool {
	return k != protoreflect.StringKind && k != protoreflect.BytesKind && k != protoreflect.MessageKind && k != protoreflect.GroupKind
}

// deliverable is the test a decoded event passes to be delivered, and checkEvent's specification:
// it has an id, and its timestamps are in the range protojson formats.
func deliverable(ev *pb.Event) bool {
	return ev.GetId() != "" &&
		(ev.ReceivedTime == nil || ev.ReceivedTime.CheckValid() == nil) &&
		(ev.DecideBy == nil || ev.DecideBy.CheckValid() == nil)
}

// checkEvent returns the id of the encoded Event b, or false if b is not one to deliver. The id is
// the last one in b, as decoders read a field sent twice.
func checkEvent(b []byte) (string, bool) {
	var id []byte
	if !eventCheck.valid(b, 0, &id) {
		return "", false
	}
	return string(id), len(id) > 0
}

// maxCheckDepth matches protobuf-go's default recursion limit.
const maxCheckDepth = protowire.DefaultRecursionLimit

// valid checks one message at depth; id, if not nil, receives the bytes of its field 1 (a string).
func (c *wireCheck) valid(b []byte, depth int, id *[]byte) bool {
	if depth > maxCheckDepth {
		return false
	}
	if c.timestamp {
		st, ok := scanTimestamp(b)
		return ok && st.valid()
	}
	var stamps [maxStamps]stamp // the singular Timestamp fields seen, merged
	nstamps := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return false
		}
		b = b[n:]
		var f fieldCheck
		if int(num) < len(c.fields) {
			f = c.fields[num]
		}
		if typ != protowire.BytesType || f.kind == 0 {
			// A scalar, a field with an unexpected wire type (kept as unknown by protobuf-go) or
			// an unknown field: only its framing can be wrong.
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case f.kind == protoreflect.StringKind:
			if !utf8.Valid(v) {
				return false
			}
			if num == 1 && id != nil {
				*id = v
			}
		case f.stamp:
			st, ok := scanTimestamp(v)
			if !ok {
				return false
			}
			i := 0
			for i < nstamps && stamps[i].num != num {
				i++
			}
			if i == nstamps {
				stamps[i].num = num
				nstamps++
			}
			stamps[i].merge(st)
		case f.msg != nil:
			if !f.msg.valid(v, depth+1, nil) {
				return false
			}
		case f.packed:
			if !validPacked(f.kind, v) {
				return false
			}
		}
	}
	for _, st := range stamps[:nstamps] {
		if !st.valid() {
			return false
		}
	}
	return true
}

// stamp is a google.protobuf.Timestamp as decoded so far: each of its fields as last sent.
type stamp struct {
	num                  protowire.Number // the field it is, in its parent
	seconds, nanos       uint64
	hasSeconds, hasNanos bool
}

func (s *stamp) merge(o stamp) {
	if o.hasSeconds {
		s.seconds, s.hasSeconds = o.seconds, true
	}
	if o.hasNanos {
		s.nanos, s.hasNanos = o.nanos, true
	}
}

func (s stamp) valid() bool { return validTimestamp(int64(s.seconds), int32(s.nanos)) }

// scanTimestamp reads an encoded Timestamp: seconds (field 1) and nanos (field 2) as varints, the
// last of each winning; anything else only has to be well framed.
func scanTimestamp(b []byte) (stamp, bool) {
	var st stamp
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return st, false
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return st, false
			}
			b = b[n:]
			st.merge(stamp{seconds: v, nanos: v, hasSeconds: num == 1, hasNanos: num == 2})
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return st, false
		}
		b = b[n:]
	}
	return st, true
}

// validPacked checks packed scalars: varints, or whole fixed-size values.
func validPacked(k protoreflect.Kind, v []byte) bool {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return len(v)%4 == 0
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return len(v)%8 == 0
	}
	for len(v) > 0 {
		_, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return false
		}
		v = v[n:]
	}
	return true
}

// The range protojson formats: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

func validTimestamp(seconds int64, nanos int32) bool {
	return seconds >= minTimestampSeconds && seconds <= maxTimestampSeconds && nanos >= 0 && nanos < 1e9
}
