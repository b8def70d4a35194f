package wirejson

import (
	"strconv"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// decode is Unmarshal's body, on a reset message.
func (d *decoder) decode(b []byte, msg protoreflect.Message) error {
	d.buf, d.pos, d.depth = b, 0, 0
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
	if err := d.object(msg, fieldsOf(msg.Descriptor())); err != nil {
		return err
	}
	return d.end()
}

// end checks that only whitespace follows the top-level value.
func (d *decoder) end() error {
	d.space()
	if d.pos < len(d.buf) {
		return d.unexpected(d.pos, "after top-level value")
	}
	return nil
}

// object decodes the object at pos into msg.
func (d *decoder) object(msg protoreflect.Message, fs *fields) error {
	empty, err := d.open('}')
	if empty || err != nil {
		return err
	}
	for {
		keyStart := d.pos
		k, err := d.key()
		if err != nil {
			return err
		}
		var fd protoreflect.FieldDescriptor
		fd, d.fold = fs.lookup(k, d.fold)
		if fd == nil {
			err = d.skip()
		} else {
			err = d.field(msg, fd)
		}
		if err != nil {
			return d.inKey(err, keyStart)
		}
		if done, err := d.afterValue('}'); done || err != nil {
			return err
		}
	}
}

// field decodes the value at pos into field fd of msg. A later duplicate key replaces what an
// earlier one set, lists and messages included (encoding/json's last-wins, not protobuf's merge).
func (d *decoder) field(msg protoreflect.Message, fd protoreflect.FieldDescriptor) error {
	if d.buf[d.pos] == 'n' {
		if err := d.literal("null"); err != nil {
			return err
		}
		msg.Clear(fd) // null is unset: keeps proto3 optional's "not changed" apart from ""
		return nil
	}
	switch {
	case fd.IsList():
		return d.list(msg, fd)
	case fd.IsMap():
		return d.mapField(msg, fd)
	case fd.Message() != nil:
		if d.buf[d.pos] != '{' {
			return d.mismatch("object")
		}
		msg.Clear(fd)
		return d.object(msg.Mutable(fd).Message(), fieldsOf(fd.Message()))
	}
	v, ok, err := d.scalar(fd)
	switch {
	case err != nil:
		return err
	case ok:
		msg.Set(fd, v)
	default:
		msg.Clear(fd)
	}
	return nil
}

// scalar decodes a value for a non-message field (or list element, or map value) fd. ok is false
// for null and for a {"value": x} wrapper without a value: the field is to be left unset.
func (d *decoder) scalar(fd protoreflect.FieldDescriptor) (v protoreflect.Value, ok bool, err error) {
	start := d.pos
	var msg string
	switch c := d.buf[d.pos]; c {
	case 'n':
		return v, false, d.literal("null")
	case '{':
		return d.wrapped(fd)
	case '"':
		s, err := d.str()
		if err != nil {
			return v, false, err
		}
		v, msg = fromString(fd, s)
	case 't', 'f':
		word := "true"
		if c == 'f' {
			word = "false"
		}
		if err := d.literal(word); err != nil {
			return v, false, err
		}
		switch fd.Kind() {
		case protoreflect.BoolKind:
			v = protoreflect.ValueOfBool(c == 't')
		case protoreflect.StringKind:
			v = protoreflect.ValueOfString(word)
		default:
			msg = "want " + want(fd.Kind()) + ", got bool"
		}
	default:
		if c != '-' && !isDigit(c) {
			return v, false, d.mismatch(want(fd.Kind()))
		}
		s, err := d.number()
		if err != nil {
			return v, false, err
		}
		v, msg = fromNumber(fd, s)
	}
	if msg != "" {
		return v, false, &ValueError{Offset: start, Msg: msg}
	}
	return v, true, nil
}

// wrapped decodes OpenIM's documented {"value": x} form of a scalar: x is the field's value, other
// keys are ignored, and the last "value" wins.
func (d *decoder) wrapped(fd protoreflect.FieldDescriptor) (v protoreflect.Value, ok bool, err error) {
	empty, err := d.open('}')
	if empty || err != nil {
		return v, false, err
	}
	for {
		keyStart := d.pos
		k, err := d.key()
		if err != nil {
			return v, false, err
		}
		if isValueKey(k) {
			v, ok, err = d.scalar(fd)
		} else {
			err = d.skip()
		}
		if err != nil {
			return v, false, d.inKey(err, keyStart)
		}
		if done, err := d.afterValue('}'); done || err != nil {
			return v, ok, err
		}
	}
}

// isValueKey reports whether k is "value" ignoring case. ASCII folding is enough: none of the
// letters of "value" has a non-ASCII case variant, and OR-ing 0x20 maps only 'V' to 'v' and so on.
func isValueKey(k []byte) bool {
	return len(k) == 5 && k[0]|0x20 == 'v' && k[1]|0x20 == 'a' && k[2]|0x20 == 'l' && k[3]|0x20 == 'u' && k[4]|0x20 == 'e'
}

// list decodes an array into the repeated field fd, skipping null elements.
func (d *decoder) list(msg protoreflect.Message, fd protoreflect.FieldDescriptor) error {
	if d.buf[d.pos] != '[' {
		return d.mismatch("array")
	}
	msg.Clear(fd)
	empty, err := d.open(']')
	if empty || err != nil {
		return err
	}
	var l protoreflect.List // made on the first element, so [] stays unset
	var sub *fields
	if md := fd.Message(); md != nil {
		sub = fieldsOf(md)
	}
	for i := 0; ; i++ {
		if err := d.element(msg, fd, &l, sub); err != nil {
			return inIndex(err, i)
		}
		if done, err := d.afterValue(']'); done || err != nil {
			return err
		}
	}
}

func (d *decoder) element(msg protoreflect.Message, fd protoreflect.FieldDescriptor, l *protoreflect.List, sub *fields) error {
	if d.buf[d.pos] == 'n' {
		return d.literal("null")
	}
	if sub != nil {
		if d.buf[d.pos] != '{' {
			return d.mismatch("object")
		}
		if *l == nil {
			*l = msg.Mutable(fd).List()
		}
		e := (*l).NewElement()
		if err := d.object(e.Message(), sub); err != nil {
			return err
		}
		(*l).Append(e)
		return nil
	}
	v, ok, err := d.scalar(fd)
	if ok {
		if *l == nil {
			*l = msg.Mutable(fd).List()
		}
		(*l).Append(v)
	}
	return err
}

// mapField decodes an object into the map field fd. Keys are converted to the key's kind; a null
// value removes the key.
func (d *decoder) mapField(msg protoreflect.Message, fd protoreflect.FieldDescriptor) error {
	if d.buf[d.pos] != '{' {
		return d.mismatch("object")
	}
	msg.Clear(fd)
	empty, err := d.open('}')
	if empty || err != nil {
		return err
	}
	kd, vd := fd.MapKey(), fd.MapValue()
	var sub *fields
	if md := vd.Message(); md != nil {
		sub = fieldsOf(md)
	}
	var m protoreflect.Map // made on the first entry, so {} stays unset
	for {
		keyStart := d.pos
		k, err := d.key()
		if err != nil {
			return err
		}
		// Convert before decoding the value: k may point into scratch space the value reuses.
		kv, bad := fromString(kd, k)
		if bad != "" {
			return d.inKey(&ValueError{Offset: keyStart, Msg: "map key: " + bad}, keyStart)
		}
		if err := d.entry(msg, fd, &m, kv.MapKey(), sub); err != nil {
			return d.inKey(err, keyStart)
		}
		if done, err := d.afterValue('}'); done || err != nil {
			return err
		}
	}
}

func (d *decoder) entry(msg protoreflect.Message, fd protoreflect.FieldDescriptor, m *protoreflect.Map, k protoreflect.MapKey, sub *fields) error {
	if *m == nil && d.buf[d.pos] != 'n' {
		*m = msg.Mutable(fd).Map()
	}
	if sub != nil && d.buf[d.pos] != 'n' {
		if d.buf[d.pos] != '{' {
			return d.mismatch("object")
		}
		v := (*m).NewValue()
		if err := d.object(v.Message(), sub); err != nil {
			return err
		}
		(*m).Set(k, v)
		return nil
	}
	v, ok, err := d.scalar(fd.MapValue())
	switch {
	case err != nil:
		return err
	case ok:
		(*m).Set(k, v)
	case *m != nil:
		(*m).Clear(k)
	}
	return nil
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
