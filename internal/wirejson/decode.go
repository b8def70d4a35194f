package wirejson

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// How decoding works: the JSON is transcoded, field by field as the message descriptor says, into
// protobuf wire format in a pooled buffer, and proto.Unmarshal builds the message from that. Setting
// fields through protoreflect instead would cost two extra allocations per string field (the
// generated code's reflection boxes every value) and run at half the speed; the wire format lets
// protobuf's own table-driven decoder make exactly the strings, messages and slices the result
// holds.
//
// JSON semantics the wire format does not have are settled while transcoding: a repeated key must
// replace what the earlier one wrote (the wire format would append to a list or merge a message),
// and null must forget it. Each object therefore records which bytes each key wrote (a span) and
// cuts out the spans of a key that comes again.

// span is the wire bytes w[start:end] written for one key of the object being decoded.
type span struct {
	num        protowire.Number // 0 once a later occurrence of the key made the span dead
	start, end int
}

// decode is Unmarshal's body, on a reset message.
func (d *decoder) decode(b []byte, m proto.Message) error {
	d.buf, d.pos, d.depth = b, 0, 0
	d.w, d.spans = d.w[:0], d.spans[:0]
	d.space()
	if d.pos == len(d.buf) {
		return ErrEmpty
	}
	start := d.pos
	if c := d.buf[start]; c != '{' {
		// Still check the syntax, so that malformed input is always a SyntaxError.
		if err := d.skip(); err != nil {
			return err
		}
		if err := d.end(); err != nil {
			return err
		}
		return &ValueError{Offset: start, Msg: "want object, got " + jsonType(c)}
	}
	if err := d.object(fieldsOf(m.ProtoReflect().Descriptor())); err != nil {
		return err
	}
	if err := d.end(); err != nil {
		return err
	}
	// The wire bytes are well-formed by construction; the only possible error is a proto2
	// required field left unset.
	if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(d.w, m); err != nil {
		return fmt.Errorf("wirejson: %w", err)
	}
	return nil
}

// end checks that only whitespace follows the top-level value.
func (d *decoder) end() error {
	d.space()
	if d.pos < len(d.buf) {
		return d.unexpected(d.pos, "after top-level value")
	}
	return nil
}

// object transcodes the object at pos: the fields it holds, without tag or length.
func (d *decoder) object(fs *fields) error {
	empty, err := d.open('}')
	if empty || err != nil {
		return err
	}
	base := len(d.spans)
	var seen uint64 // field numbers below 64 met so far: spares the span scan for first occurrences
	dead := false
	next := 0 // see fields.lookup
	for {
		keyStart := d.pos
		k, err := d.key()
		if err != nil {
			return err
		}
		var fd protoreflect.FieldDescriptor
		fd, d.fold = fs.lookup(k, d.fold, &next)
		if fd == nil {
			if err := d.skip(); err != nil {
				return d.inKey(err, keyStart)
			}
		} else {
			start := len(d.w)
			if err := d.field(fd); err != nil {
				return d.inKey(err, keyStart)
			}
			num := fd.Number()
			if num < 64 && seen&(1<<num) == 0 {
				seen |= 1 << num
			} else if d.forget(base, num) {
				dead = true
			}
			if len(d.w) > start {
				d.spans = append(d.spans, span{num: num, start: start, end: len(d.w)})
			}
		}
		if done, err := d.afterValue('}'); done || err != nil {
			if dead && err == nil {
				d.compact(base)
			}
			d.spans = d.spans[:base]
			return err
		}
	}
}

// forget marks dead the spans of field num written by this object (spans from base on), and
// reports whether there were any.
func (d *decoder) forget(base int, num protowire.Number) bool {
	found := false
	for i := base; i < len(d.spans); i++ {
		if d.spans[i].num == num {
			d.spans[i].num = 0
			found = true
		}
	}
	return found
}

// compact cuts the dead spans out of this object's wire bytes. The spans are in order and cover all
// the bytes the object wrote, since unknown keys and nulls write none.
func (d *decoder) compact(base int) {
	to := d.spans[base].start
	for _, s := range d.spans[base:] {
		if s.num != 0 {
			to += copy(d.w[to:], d.w[s.start:s.end])
		}
	}
	d.w = d.w[:to]
}

// field transcodes the value at pos for field fd. null writes nothing: the field is unset.
func (d *decoder) field(fd protoreflect.FieldDescriptor) error {
	c := d.buf[d.pos]
	if c == 'n' {
		return d.literal("null")
	}
	switch {
	case fd.IsList():
		return d.list(fd)
	case fd.IsMap():
		return d.mapField(fd)
	case fd.Message() != nil:
		if c != '{' {
			return d.mismatch("object")
		}
		return d.message(fd, fd.Number())
	}
	_, err := d.scalar(fd, fd.Number())
	return err
}

// message transcodes the object at pos as field num, a message (or proto2 group) of fd's type.
func (d *decoder) message(fd protoreflect.FieldDescriptor, num protowire.Number) error {
	fs := fieldsOf(fd.Message())
	if fd.Kind() == protoreflect.GroupKind {
		d.w = protowire.AppendTag(d.w, num, protowire.StartGroupType)
		if err := d.object(fs); err != nil {
			return err
		}
		d.w = protowire.AppendTag(d.w, num, protowire.EndGroupType)
		return nil
	}
	d.w = protowire.AppendTag(d.w, num, protowire.BytesType)
	at := d.beginLen()
	if err := d.object(fs); err != nil {
		return err
	}
	d.endLen(at)
	return nil
}

// beginLen reserves one byte for a length prefix, enough for most nested messages, and returns its
// position for endLen.
func (d *decoder) beginLen() int {
	d.w = append(d.w, 0)
	return len(d.w) - 1
}

// endLen writes the length of what follows the reserved byte at at, first moving it up if the
// length needs more than one byte.
func (d *decoder) endLen(at int) {
	n := len(d.w) - at - 1
	if n < 0x80 {
		d.w[at] = byte(n)
		return
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	d.w = append(d.w, make([]byte, extra)...)
	copy(d.w[at+1+extra:], d.w[at+1:at+1+n])
	protowire.AppendVarint(d.w[:at], uint64(n))
}

// scalar transcodes a value for a non-message field (or list element, or map value) fd as field
// num. It reports whether it wrote anything: null, and a {"value": x} wrapper without a value,
// write nothing.
func (d *decoder) scalar(fd protoreflect.FieldDescriptor, num protowire.Number) (bool, error) {
	start := d.pos
	var msg string
	switch c := d.buf[d.pos]; c {
	case 'n':
		return false, d.literal("null")
	case '{':
		return d.wrapped(fd, num)
	case '"':
		s, err := d.str()
		if err != nil {
			return false, err
		}
		msg = d.fromString(fd, num, s)
	case 't', 'f':
		word := "true"
		if c == 'f' {
			word = "false"
		}
		if err := d.literal(word); err != nil {
			return false, err
		}
		if fd.Kind() == protoreflect.BoolKind {
			d.w = appendNumber(d.w, num, protoreflect.BoolKind, protowire.EncodeBool(c == 't'))
		} else {
			msg = "want " + want(fd.Kind()) + ", got bool"
		}
	default:
		if c != '-' && !isDigit(c) {
			return false, d.mismatch(want(fd.Kind()))
		}
		s, err := d.number()
		if err != nil {
			return false, err
		}
		msg = d.fromNumber(fd, num, s)
	}
	if msg != "" {
		return false, &ValueError{Offset: start, Msg: msg}
	}
	return true, nil
}

// wrapped transcodes OpenIM's documented {"value": x} form of a scalar: x is the field's value,
// other keys are ignored, and the last "value" wins. That form is a protobuf wrapper (StringValue,
// Int32Value) as encoding/json writes it, which omits a zero value: {} is "" or 0. An object with
// keys but no "value" is no such form, and is refused.
func (d *decoder) wrapped(fd protoreflect.FieldDescriptor, num protowire.Number) (wrote bool, err error) {
	objStart := d.pos
	empty, err := d.open('}')
	if err != nil {
		return false, err
	}
	if empty {
		return true, d.zero(fd, num)
	}
	start := len(d.w)
	sawValue := false
	for {
		keyStart := d.pos
		k, err := d.key()
		if err != nil {
			return false, err
		}
		if isValueKey(k) {
			d.w = d.w[:start] // forget an earlier "value"
			sawValue = true
			wrote, err = d.scalar(fd, num)
		} else {
			err = d.skip()
		}
		if err != nil {
			return false, d.inKey(err, keyStart)
		}
		if done, err := d.afterValue('}'); done || err != nil {
			if err == nil && !sawValue {
				return false, &ValueError{Offset: objStart, Msg: "want " + want(fd.Kind()) + `, got an object without "value"`}
			}
			return wrote, err
		}
	}
}

// zero writes fd's zero value as field num: what an omitted wrapper value stands for.
func (d *decoder) zero(fd protoreflect.FieldDescriptor, num protowire.Number) error {
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		d.w = protowire.AppendBytes(protowire.AppendTag(d.w, num, protowire.BytesType), nil)
		return nil
	case protoreflect.BoolKind:
		d.w = appendNumber(d.w, num, protoreflect.BoolKind, 0)
		return nil
	}
	if msg := d.fromNumber(fd, num, []byte("0")); msg != "" {
		return &ValueError{Offset: d.pos, Msg: msg}
	}
	return nil
}

// isValueKey reports whether k is "value" ignoring case. ASCII folding is enough: none of the
// letters of "value" has a non-ASCII case variant, and OR-ing 0x20 maps only 'V' to 'v' and so on.
func isValueKey(k []byte) bool {
	return len(k) == 5 && k[0]|0x20 == 'v' && k[1]|0x20 == 'a' && k[2]|0x20 == 'l' && k[3]|0x20 == 'u' && k[4]|0x20 == 'e'
}

// list transcodes an array for the repeated field fd, one record per element (proto.Unmarshal takes
// unpacked lists for every kind). Null elements are skipped.
func (d *decoder) list(fd protoreflect.FieldDescriptor) error {
	if d.buf[d.pos] != '[' {
		return d.mismatch("array")
	}
	empty, err := d.open(']')
	if empty || err != nil {
		return err
	}
	num, isMessage := fd.Number(), fd.Message() != nil
	for i := 0; ; i++ {
		var err error
		switch {
		case d.buf[d.pos] == 'n':
			err = d.literal("null")
		case isMessage && d.buf[d.pos] != '{':
			err = d.mismatch("object")
		case isMessage:
			err = d.message(fd, num)
		default:
			_, err = d.scalar(fd, num)
		}
		if err != nil {
			return inIndex(err, i)
		}
		if done, err := d.afterValue(']'); done || err != nil {
			return err
		}
	}
}

// mapField transcodes an object for the map field fd: each key, converted to the key's kind, and
// its value become one map entry message. Null values are skipped, like null list elements.
func (d *decoder) mapField(fd protoreflect.FieldDescriptor) error {
	if d.buf[d.pos] != '{' {
		return d.mismatch("object")
	}
	empty, err := d.open('}')
	if empty || err != nil {
		return err
	}
	num, kd, vd := fd.Number(), fd.MapKey(), fd.MapValue()
	for {
		keyStart := d.pos
		k, err := d.key()
		if err != nil {
			return err
		}
		entry := len(d.w)
		d.w = protowire.AppendTag(d.w, num, protowire.BytesType)
		at := d.beginLen()
		// The key goes first anyway, and must: k may point into scratch space the value reuses.
		if msg := d.fromString(kd, 1, k); msg != "" {
			return d.inKey(&ValueError{Offset: keyStart, Msg: "map key: " + msg}, keyStart)
		}
		wrote := true
		switch {
		case d.buf[d.pos] == 'n':
			err, wrote = d.literal("null"), false
		case vd.Message() != nil && d.buf[d.pos] != '{':
			err = d.mismatch("object")
		case vd.Message() != nil:
			err = d.message(vd, 2)
		default:
			wrote, err = d.scalar(vd, 2)
		}
		if err != nil {
			return d.inKey(err, keyStart)
		}
		if wrote {
			d.endLen(at)
		} else {
			d.w = d.w[:entry]
		}
		if done, err := d.afterValue('}'); done || err != nil {
			return err
		}
	}
}

// mismatch reports the value at pos as the wrong JSON type, or as a syntax error if no value starts
// there.
func (d *decoder) mismatch(want string) error {
	got := jsonType(d.buf[d.pos])
	if got == "" {
		return d.unexpected(d.pos, "looking for beginning of value")
	}
	return &ValueError{Offset: d.pos, Msg: "want " + want + ", got " + got}
}

// inKey adds the key that starts at keyStart to the path of a ValueError coming from its value.
func (d *decoder) inKey(err error, keyStart int) error {
	if ve, ok := err.(*ValueError); ok {
		ve.prepend(d.keyAt(keyStart))
	}
	return err
}

func inIndex(err error, i int) error {
	if ve, ok := err.(*ValueError); ok {
		ve.prepend("[" + strconv.Itoa(i) + "]")
	}
	return err
}

func (e *ValueError) prepend(seg string) {
	switch {
	case e.Path == "":
		e.Path = seg
	case e.Path[0] == '[':
		e.Path = seg + e.Path
	default:
		e.Path = seg + "." + e.Path
	}
}
