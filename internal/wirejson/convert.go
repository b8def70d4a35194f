package wirejson

import (
	"bytes"
	"encoding/base64"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The converters transcode one JSON scalar as field num of a field of fd's kind. On failure they
// return a message for a ValueError; the caller adds the path and offset.

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

// fromString transcodes the content of a JSON string.
func (d *decoder) fromString(fd protoreflect.FieldDescriptor, num protowire.Number, s []byte) string {
	switch k := fd.Kind(); k {
	case protoreflect.StringKind:
		d.w = protowire.AppendBytes(protowire.AppendTag(d.w, num, protowire.BytesType), s)
		return ""
	case protoreflect.BytesKind:
		return d.fromBase64(num, s)
	case protoreflect.BoolKind:
		switch string(s) {
		case "true", "false":
			d.w = appendNumber(d.w, num, k, protowire.EncodeBool(s[0] == 't'))
			return ""
		}
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil {
			d.w = appendNumber(d.w, num, k, uint64(ev.Number()))
			return ""
		}
		if isNumber(s) {
			return d.fromNumber(fd, num, s)
		}
		return "unknown " + string(fd.Enum().FullName()) + " value " + quote(s)
	default:
		// Numbers sent as strings: Tencent's "EventTime": "1670574414123".
		if isNumber(s) {
			return d.fromNumber(fd, num, s)
		}
	}
	return "want " + want(fd.Kind()) + ", got string " + quote(s)
}

// fromNumber transcodes the text of a JSON number (already checked against the grammar).
func (d *decoder) fromNumber(fd protoreflect.FieldDescriptor, num protowire.Number, s []byte) string {
	switch k := fd.Kind(); k {
	case protoreflect.StringKind:
		// The literal text, so "groupID": 123 reads as "123".
		d.w = protowire.AppendBytes(protowire.AppendTag(d.w, num, protowire.BytesType), s)
		return ""
	case protoreflect.BoolKind, protoreflect.BytesKind:
		return "want " + want(k) + ", got number"
	case protoreflect.FloatKind:
		f, err := strconv.ParseFloat(string(s), 32)
		if err != nil {
			// The grammar was checked, so only the range can be wrong.
			return quote(s) + " out of range for float"
		}
		d.w = appendNumber(d.w, num, k, uint64(math.Float32bits(float32(f))))
		return ""
	case protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(string(s), 64)
		if err != nil {
			return quote(s) + " out of range for double"
		}
		d.w = appendNumber(d.w, num, k, math.Float64bits(f))
		return ""
	}
	return d.fromInteger(fd, num, s)
}

// fromInteger transcodes a JSON number that must be an integer in range for fd's kind (an integer
// kind, or an enum, which is an int32).
func (d *decoder) fromInteger(fd protoreflect.FieldDescriptor, num protowire.Number, s []byte) string {
	k := fd.Kind()
	neg, mag, st := parseInteger(s)
	switch st {
	case notInteger:
		return quote(s) + " is not an integer"
	case tooBig:
		return quote(s) + " out of range for " + k.String()
	}
	if neg && mag == 0 {
		neg = false // -0
	}
	var lo, hi uint64 // the most negative value's magnitude, and the largest value
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind, protoreflect.EnumKind:
		lo, hi = 1<<31, math.MaxInt32
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		lo, hi = 1<<63, math.MaxInt64
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		hi = math.MaxUint32
	default: // Uint64Kind, Fixed64Kind
		hi = math.MaxUint64
	}
	if neg && mag > lo || !neg && mag > hi {
		return quote(s) + " out of range for " + k.String()
	}
	x := mag
	if neg {
		x = -mag // two's complement, sign-extended to 64 bits as the wire format wants
	}
	if k == protoreflect.EnumKind && fd.Enum().IsClosed() && fd.Enum().Values().ByNumber(protoreflect.EnumNumber(int64(x))) == nil {
		// A closed (proto2) enum would drop the number into unknown fields: refuse it instead.
		return "unknown " + string(fd.Enum().FullName()) + " value " + quote(s)
	}
	d.w = appendNumber(d.w, num, k, x)
	return ""
}

// appendNumber appends field num of kind k with value x: an integer's two's-complement bits, a
// float's IEEE bits, or 0 or 1 for a bool.
func appendNumber(w []byte, num protowire.Number, k protoreflect.Kind, x uint64) []byte {
	switch k {
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return protowire.AppendVarint(protowire.AppendTag(w, num, protowire.VarintType), protowire.EncodeZigZag(int64(x)))
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.AppendFixed32(protowire.AppendTag(w, num, protowire.Fixed32Type), uint32(x))
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.AppendFixed64(protowire.AppendTag(w, num, protowire.Fixed64Type), x)
	}
	return protowire.AppendVarint(protowire.AppendTag(w, num, protowire.VarintType), x)
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

// fromBase64 accepts the standard and the URL alphabet, with or without padding, as protojson does,
// and decodes straight into the wire buffer.
func (d *decoder) fromBase64(num protowire.Number, s []byte) string {
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
	d.w = protowire.AppendTag(d.w, num, protowire.BytesType)
	at := d.beginLen()
	from := len(d.w)
	d.w = append(d.w, make([]byte, enc.DecodedLen(len(s)))...)
	n, err := enc.Decode(d.w[from:], s)
	if err != nil {
		return "want base64 string, got " + quote(s)
	}
	d.w = d.w[:from+n]
	d.endLen(at)
	return ""
}

// quote quotes s for an error message, cut short: the input may be megabytes of digits.
func quote(s []byte) string {
	const limit = 40
	if len(s) > limit {
		return strconv.Quote(string(s[:limit])) + "..."
	}
	return strconv.Quote(string(s))
}
