// Package wirejson decodes the JSON bodies that IM vendors (OpenIM, Tencent Cloud IM) post to the
// bridge into protobuf messages, and encodes the vendors' answers.
//
// Decoding is lenient in the ways the real servers need, which protojson is not: OpenIM sends null for
// unchanged fields and documents a {"value": x} wrapper for changed ones, Tencent sends EventTime as a
// number or as a string, and both are Go encoding/json at heart (keys match case-insensitively,
// unknown keys are ignored, the last duplicate wins). What the JSON syntax allows is exactly what
// encoding/json allows, so nothing malformed slips through.
//
// Encoding is exact: every field is present, in field-number order, with the message's JSON names,
// 64-bit integers as numbers and strings escaped as encoding/json escapes them, because the IM servers
// parse the answers with strict struct decoders.
//
// The package does no I/O and no logging: it returns errors.
package wirejson

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"
)

// MaxDepth is how deeply objects and arrays may nest in a decoded body; deeper input is refused with
// ErrTooDeep so that a hostile body cannot exhaust the stack. Real callbacks nest three levels at most.
const MaxDepth = 200

// ErrEmpty is returned by Unmarshal for a body that is empty or only whitespace.
var ErrEmpty = errors.New("wirejson: empty input")

// ErrTooDeep is returned (wrapped) by Unmarshal for a body that nests deeper than MaxDepth.
var ErrTooDeep = errors.New("wirejson: nesting too deep")

var errNilMessage = errors.New("wirejson: nil message")

// SyntaxError reports malformed JSON: input for which encoding/json's Valid is false.
type SyntaxError struct {
	Offset int    // byte offset in the input where the error was found
	Msg    string // what is wrong, in encoding/json's words
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("wirejson: syntax error at offset %d: %s", e.Offset, e.Msg)
}

// ValueError reports well-formed JSON holding a value that does not fit the message: a wrong type,
// an integer out of range for its field, a bad base64 string, an unknown enum name.
type ValueError struct {
	Path   string // JSON key path of the value, e.g. "ExitMemberList[1].Member_Account"; "" for the whole body
	Offset int    // byte offset of the value in the input
	Msg    string // what is wrong, e.g. "want string, got array"
}

func (e *ValueError) Error() string {
	if e.Path == "" {
		return "wirejson: " + e.Msg
	}
	return "wirejson: " + e.Path + ": " + e.Msg
}

// Unmarshal decodes the JSON object in b into m, which is reset first, and again on error so that
// it never holds a partial decode. The result does not alias b.
//
// Keys match a field's JSON name, then its proto name, then its JSON name ignoring case (as
// encoding/json does); unknown keys are skipped. The last occurrence of a key decides its field,
// and null leaves the field unset, so proto3 optional fields keep "not sent" apart from "". A
// scalar field also takes OpenIM's {"value": x}. Strings take numbers and bools as their text;
// integer, float and bool fields take their value in a string too (Tencent's
// "EventTime": "1670574414123"), and integers any notation of an integer (1e3, 2.0), range-checked.
// Enums take names or numbers, bytes base64 in either alphabet with or without padding. Null list
// elements and null map values are skipped. Invalid UTF-8 in strings becomes U+FFFD.
//
// Input that encoding/json's Valid rejects always fails. Errors are ErrEmpty, an error wrapping
// ErrTooDeep, *SyntaxError for malformed JSON, and *ValueError for a value that does not fit its
// field (reported where it is met, before any syntax error further on); for proto2 messages also
// protobuf's error for a required field left unset.
func Unmarshal(b []byte, m proto.Message) error {
	if m == nil {
		return errNilMessage
	}
	msg := m.ProtoReflect()
	if !msg.IsValid() {
		return errNilMessage
	}
	proto.Reset(m)
	d := decoders.Get().(*decoder)
	err := d.decode(b, m)
	d.release()
	if err != nil {
		proto.Reset(m)
	}
	return err
}

// Marshal encodes m as compact JSON for answering an IM server: every field, in field-number order,
// keyed by its JSON name. Unset fields with presence (proto3 optional, messages) are null, other
// unset fields are their zero value, empty lists are [] and empty maps {}; of a oneof only the set
// member appears. 64-bit integers are numbers, enums their value names, bytes standard base64.
// NaN and infinite floats are an error: JSON cannot carry them.
func Marshal(m proto.Message) ([]byte, error) {
	// Encoding into a pooled buffer and copying out costs one allocation of the exact size, where
	// growing a fresh slice would cost several.
	bp := encodeBuffers.Get().(*[]byte)
	b, err := AppendMarshal((*bp)[:0], m)
	var out []byte
	if err == nil {
		out = bytes.Clone(b)
	}
	if cap(b) <= 64<<10 {
		*bp = b
		encodeBuffers.Put(bp)
	}
	return out, err
}

var encodeBuffers = sync.Pool{New: func() any { return new([]byte) }}

// AppendMarshal is Marshal appending to dst. On error it returns dst unchanged.
func AppendMarshal(dst []byte, m proto.Message) ([]byte, error) {
	if m == nil {
		return dst, errNilMessage
	}
	b, err := appendMessage(dst, m.ProtoReflect(), 0)
	if err != nil {
		return dst, err
	}
	return b, nil
}
