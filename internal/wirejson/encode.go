package wirejson

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxMarshalDepth stops a message that contains itself (Go pointers allow the cycle) with an error
// instead of a stack overflow, which would kill the process.
const maxMarshalDepth = 10000

func appendMessage(b []byte, msg protoreflect.Message, depth int) ([]byte, error) {
	if depth > maxMarshalDepth {
		return b, fmt.Errorf("wirejson: %s nested more than %d levels", msg.Descriptor().FullName(), maxMarshalDepth)
	}
	fs := fieldsOf(msg.Descriptor())
	b = append(b, '{')
	var err error
	first := true
	for i, fd := range fs.ordered {
		// Members of a oneof cannot all be set at once, so only the one that is set is written.
		if od := fs.oneofs[i]; od != nil && msg.WhichOneof(od) != fd {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, fs.keys[i]...)
		switch {
		case fd.IsList():
			b, err = appendList(b, fd, msg.Get(fd).List(), depth)
		case fd.IsMap():
			b, err = appendMap(b, fd, msg.Get(fd).Map(), depth)
		case fd.HasPresence() && !msg.Has(fd):
			b = append(b, "null"...)
		case fd.Message() != nil:
			b, err = appendMessage(b, msg.Get(fd).Message(), depth+1)
		default:
			b, err = appendScalar(b, fd, msg.Get(fd))
		}
		if err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func appendList(b []byte, fd protoreflect.FieldDescriptor, l protoreflect.List, depth int) ([]byte, error) {
	b = append(b, '[')
	var err error
	for i := range l.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		if fd.Message() != nil {
			b, err = appendMessage(b, l.Get(i).Message(), depth+1)
		} else {
			b, err = appendScalar(b, fd, l.Get(i))
		}
		if err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// appendMap writes the entries sorted by key, numerically for integer keys, so that the output is
// deterministic.
func appendMap(b []byte, fd protoreflect.FieldDescriptor, m protoreflect.Map, depth int) ([]byte, error) {
	keys := make([]protoreflect.MapKey, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	kd, vd := fd.MapKey(), fd.MapValue()
	slices.SortFunc(keys, func(x, y protoreflect.MapKey) int {
		switch kd.Kind() {
		case protoreflect.StringKind:
			return strings.Compare(x.String(), y.String())
		case protoreflect.BoolKind:
			return cmp.Compare(boolInt(x.Bool()), boolInt(y.Bool()))
		case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
			return cmp.Compare(x.Uint(), y.Uint())
		}
		return cmp.Compare(x.Int(), y.Int())
	})
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		// JSON keys are strings: integer and bool keys are written quoted.
		switch kd.Kind() {
		case protoreflect.StringKind:
			b = appendString(b, k.String())
		default:
			b = append(b, '"')
			b, _ = appendScalar(b, kd, k.Value())
			b = append(b, '"')
		}
		b = append(b, ':')
		if vd.Message() != nil {
			b, err = appendMessage(b, m.Get(k).Message(), depth+1)
		} else {
			b, err = appendScalar(b, vd, m.Get(k))
		}
		if err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

func appendScalar(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return appendString(b, v.String()), nil
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		// Numbers, not protojson's quoted 64-bit strings: the IM servers decode into int fields.
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.FloatKind:
		return appendFloat(b, fd, v.Float(), 32)
	case protoreflect.DoubleKind:
		return appendFloat(b, fd, v.Float(), 64)
	case protoreflect.BytesKind:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, v.Bytes())
		return append(b, '"'), nil
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendString(b, string(ev.Name())), nil
		}
		// A number the descriptor does not know (an open enum from a newer peer): the number is
		// all there is, and Unmarshal reads it back.
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	}
	return b, fmt.Errorf("wirejson: %s: cannot encode kind %v", fd.FullName(), fd.Kind())
}

// appendFloat writes the shortest text that reads back as f, in encoding/json's format: plain
// decimals for everyday magnitudes, exponent form (1e-7, 1e+21) outside them.
func appendFloat(b []byte, fd protoreflect.FieldDescriptor, f float64, bits int) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, fmt.Errorf("wirejson: %s: %v has no JSON form", fd.FullName(), f)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		// Compared at the field's precision: float32(1e-6) is just below the float64 1e-6.
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// strconv writes two exponent digits at least (1e-07); JSON readers do not need them.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// htmlSafe marks the ASCII bytes that appendString copies as they are: encoding/json's default
// escaping also escapes <, > and &, and the OpenIM server's own bodies show it does.
var htmlSafe = func() (t [utf8.RuneSelf]bool) {
	for c := range utf8.RuneSelf {
		t[c] = c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string escaped exactly as encoding/json.Marshal escapes it,
// invalid UTF-8 becoming \ufffd.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0 // s[start:i] is pending, to be copied in one piece
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if htmlSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// Valid JSON but line terminators in JavaScript; encoding/json escapes them.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += n
			continue
		}
		i += n
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
