package wirejson

import (
	"bytes"
	"encoding/base64"
	"math"
	"strconv"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// The converters turn one JSON scalar into a protoreflect.Value for a field of the given kind. On
// failure they return a message for a ValueError; the caller adds the path and offset.

// want names what a field of kind k accepts, for "want X, got Y" messages.
func want(k protoreflect.Kind) string {
	switch k {
	case protoreflect.StringKind:
		return "string"
	case protoreflect.BytesKind:
		return "base64 string"
	case protoreflect.BoolKind:
		return "bool"
	case protoreflect.EnumKind:
		return "enum name or number"
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return "number"
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return "object"
	}
	return "integer"
}

// fromString converts the content of a JSON string.
func fromString(fd protoreflect.FieldDescriptor, s []byte) (protoreflect.Value, string) {
	switch k := fd.Kind(); k {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(string(s)), ""
	case protoreflect.BytesKind:
		return fromBase64(s)
	case protoreflect.BoolKind:
		switch string(s) {
		case "true":
			return protoreflect.ValueOfBool(true), ""
		case "false":
			return protoreflect.ValueOfBool(false), ""
		}
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), ""
		}
		if isNumber(s) {
			return fromNumber(fd, s)
		}
		return protoreflect.Value{}, "unknown " + string(fd.Enum().FullName()) + " value " + quote(s)
	default:
		// Numbers sent as strings: Tencent's "EventTime": "1670574414123".
		if isNumber(s) {
			return fromNumber(fd, s)
		}
	}
	return protoreflect.Value{}, "want " + want(fd.Kind()) + ", got string " + quote(s)
}

// fromNumber converts the text of a JSON number (already checked against the grammar).
func fromNumber(fd protoreflect.FieldDescriptor, s []byte) (protoreflect.Value, string) {
	switch k := fd.Kind(); k {
	case protoreflect.StringKind:
		// The literal text, so "groupID": 123 reads as "123".
		return protoreflect.ValueOfString(string(s)), ""
	case protoreflect.BoolKind, protoreflect.BytesKind:
		return protoreflect.Value{}, "want " + want(k) + ", got number"
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		bits := 64
		if k == protoreflect.FloatKind {
			bits = 32
		}
		f, err := strconv.ParseFloat(string(s), bits)
		if err != nil {
			// The grammar was checked, so only the range can be wrong.
			return protoreflect.Value{}, quote(s) + " out of range for " + k.String()
		}
		if k == protoreflect.FloatKind {
			return protoreflect.ValueOfFloat32(float32(f)), ""
		}
		return protoreflect.ValueOfFloat64(f), ""
	default:
		return fromInteger(k, s)
	}
}

// fromInteger converts a JSON number that must be an integer in range for kind k (an integer kind
// or an enum, which is an int32 on the wire).
func fromInteger(k protoreflect.Kind, s []byte) (protoreflect.Value, string) {
	neg, mag, st := parseInteger(s)
	switch st {
	case notInteger:
		return protoreflect.Value{}, quote(s) + " is not an integer"
	case tooBig:
		return protoreflect.Value{}, quote(s) + " out of range for " + k.String()
	}
	if neg && mag == 0 {
		neg = false // -0
	}
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind, protoreflect.EnumKind:
		if neg && mag <= 1<<31 {
			v := int32(-int64(mag))
			if k == protoreflect.EnumKind {
				return protoreflect.ValueOfEnum(protoreflect.EnumNumber(v)), ""
			}
			return protoreflect.ValueOfInt32(v), ""
		}
		if !neg && mag <= math.MaxInt32 {
			if k == protoreflect.EnumKind {
				return protoreflect.ValueOfEnum(protoreflect.EnumNumber(mag)), ""
			}
			return protoreflect.ValueOfInt32(int32(mag)), ""
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if neg && mag <= 1<<63 {
			return protoreflect.ValueOfInt64(int64(-mag)), "" // two's complement: right for 1<<63 too
		}
		if !neg && mag <= math.MaxInt64 {
			return protoreflect.ValueOfInt64(int64(mag)), ""
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if !neg && mag <= math.MaxUint32 {
			return protoreflect.ValueOfUint32(uint32(mag)), ""
		}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if !neg {
			return protoreflect.ValueOfUint64(mag), ""
		}
	}
	return protoreflect.Value{}, quote(s) + " out of range for " + k.String()
}

type intStatus int

const (
	isInteger  intStatus = iota
	notInteger           // has a fraction: 1.5, 1e-3
	tooBig               // magnitude at least 2^64
)

// parseInteger reads a JSON number (already checked against the grammar) as sign and magnitude,
// accepting any notation of an integer: 1000, 1e3, 1000.0, 10000e-1. It neither allocates nor loses
// precision, unlike a detour through float64.
func parseInteger(s []byte) (neg bool, mag uint64, st intStatus) {
	i := 0
	if s[0] == '-' {
		neg = true
		i++
	}
	intStart := i
	i = digits(s, i)
	intPart := s[intStart:i]
	var frac []byte
	if i < len(s) && s[i] == '.' {
		fracStart := i + 1
		i = digits(s, fracStart)
		frac = s[fracStart:i]
	}
	exp := 0
	if i < len(s) { // 'e' or 'E'
		i++
		expNeg := s[i] == '-'
		if s[i] == '+' || s[i] == '-' {
			i++
		}
		for ; i < len(s); i++ {
			if exp < 1e8 { // saturate: anything this large is out of range or zero anyway
				exp = exp*10 + int(s[i]-'0')
			}
		}
		if expNeg {
			exp = -exp
		}
	}

	// Digit k of intPart+frac stands for 10^(exp + len(intPart) - 1 - k).
	digit := func(k int) byte {
		if k < len(intPart) {
			return intPart[k] - '0'
		}
		return frac[k-len(intPart)] - '0'
	}
	first, last := -1, -1
	for k := range len(intPart) + len(frac) {
		if digit(k) != 0 {
			if first < 0 {
				first = k
			}
			last = k
		}
	}
	if first < 0 {
		return neg, 0, isInteger
	}
	place := func(k int) int { return exp + len(intPart) - 1 - k }
	if place(last) < 0 {
		return neg, 0, notInteger
	}
	if place(first) >= 20 { // 2^64 has 20 digits
		return neg, 0, tooBig
	}
	for k := first; k <= last; k++ {
		if mag > (math.MaxUint64-uint64(digit(k)))/10 {
			return neg, 0, tooBig
		}
		mag = mag*10 + uint64(digit(k))
	}
	for range place(last) {
		if mag > math.MaxUint64/10 {
			return neg, 0, tooBig
		}
		mag *= 10
	}
	return neg, mag, isInteger
}

// fromBase64 accepts the standard and the URL alphabet, with or without padding, as protojson does.
func fromBase64(s []byte) (protoreflect.Value, string) {
	url, raw := bytes.ContainsAny(s, "-_"), len(s)%4 != 0
	enc := base64.StdEncoding
	switch {
	case url && raw:
		enc = base64.RawURLEncoding
	case url:
		enc = base64.URLEncoding
	case raw:
		enc = base64.RawStdEncoding
	}
	out := make([]byte, enc.DecodedLen(len(s)))
	n, err := enc.Decode(out, s)
	if err != nil {
		return protoreflect.Value{}, "want base64 string, got " + quote(s)
	}
	return protoreflect.ValueOfBytes(out[:n]), ""
}

// quote quotes s for an error message, cut short: the input may be megabytes of digits.
func quote(s []byte) string {
	const limit = 40
	if len(s) > limit {
		return strconv.Quote(string(s[:limit])) + "..."
	}
	return strconv.Quote(string(s))
}
