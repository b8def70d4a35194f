package wirejson

import (
	"fmt"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// decoder is the state of one Unmarshal: a cursor over the input and scratch buffers. Decoders are
// pooled so that the scratch buffers are allocated once, not on every callback.
//
// Every method that starts on a value expects pos < len(buf); methods that consume a token leave
// pos after it.
type decoder struct {
	buf   []byte
	pos   int
	depth int
	// scratch holds the last string that had to be unescaped; it is overwritten by the next one.
	scratch []byte
	// fold holds the last case-folded key.
	fold []byte
	// w is the message in wire format, built as the JSON is read.
	w []byte
	// spans is a stack of the spans of the objects being decoded (see object).
	spans []span
}

var decoders = sync.Pool{New: func() any { return new(decoder) }}

func (d *decoder) release() {
	d.buf = nil // do not keep the caller's body alive
	// A huge string once should not pin a huge buffer in the pool forever.
	if cap(d.scratch) > 64<<10 {
		d.scratch = nil
	}
	if cap(d.fold) > 64<<10 {
		d.fold = nil
	}
	if cap(d.w) > 64<<10 {
		d.w = nil
	}
	if cap(d.spans) > 4<<10 {
		d.spans = nil
	}
	decoders.Put(d)
}

func (d *decoder) eof() error {
	return &SyntaxError{Offset: len(d.buf), Msg: "unexpected end of JSON input"}
}

// unexpected reports the byte at pos (or the end of input) as not allowed in context, phrased like
// encoding/json: "invalid character 'x' after object key".
func (d *decoder) unexpected(pos int, context string) error {
	if pos >= len(d.buf) {
		return d.eof()
	}
	return &SyntaxError{Offset: pos, Msg: "invalid character " + quoteChar(d.buf[pos]) + " " + context}
}

func quoteChar(c byte) string {
	switch {
	case c == '\'':
		return `'\''`
	case c == '"':
		return `'"'`
	case c >= 0x20 && c < 0x7f:
		return "'" + string(rune(c)) + "'"
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// enter counts one more level of nesting.
func (d *decoder) enter() error {
	d.depth++
	if d.depth > MaxDepth {
		return fmt.Errorf("%w: more than %d levels at offset %d", ErrTooDeep, MaxDepth, d.pos)
	}
	return nil
}

// space skips JSON whitespace, which is only these four bytes.
func (d *decoder) space() {
	for d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// afterValue consumes what follows a value inside an object or array: a comma (and returns false:
// more to come) or the closing byte (and returns true, leaving the level).
func (d *decoder) afterValue(closing byte) (bool, error) {
	d.space()
	if d.pos >= len(d.buf) {
		return false, d.eof()
	}
	switch d.buf[d.pos] {
	case ',':
		d.pos++
		d.space()
		if d.pos >= len(d.buf) {
			return false, d.eof()
		}
		return false, nil
	case closing:
		d.pos++
		d.depth--
		return true, nil
	}
	if closing == '}' {
		return false, d.unexpected(d.pos, "after object key:value pair")
	}
	return false, d.unexpected(d.pos, "after array element")
}

// open consumes the opening byte of an object or array and reports whether it is empty (and then
// already closed).
func (d *decoder) open(closing byte) (bool, error) {
	if err := d.enter(); err != nil {
		return false, err
	}
	d.pos++
	d.space()
	if d.pos >= len(d.buf) {
		return false, d.eof()
	}
	if d.buf[d.pos] == closing {
		d.pos++
		d.depth--
		return true, nil
	}
	return false, nil
}

// key consumes an object key and the colon after it, and returns the unescaped key, which is only
// valid until the next string is decoded.
func (d *decoder) key() ([]byte, error) {
	if d.buf[d.pos] != '"' {
		return nil, d.unexpected(d.pos, "looking for beginning of object key string")
	}
	k, err := d.str()
	if err != nil {
		return nil, err
	}
	return k, d.colon()
}

func (d *decoder) colon() error {
	d.space()
	if d.pos >= len(d.buf) {
		return d.eof()
	}
	if d.buf[d.pos] != ':' {
		return d.unexpected(d.pos, "after object key")
	}
	d.pos++
	d.space()
	if d.pos >= len(d.buf) {
		return d.eof()
	}
	return nil
}

// keyAt decodes the key string starting at offset again. Error paths use it because the key slice
// returned by key has been overwritten by then.
func (d *decoder) keyAt(offset int) string {
	k := decoder{buf: d.buf, pos: offset}
	s, err := k.str()
	if err != nil {
		return "?"
	}
	return string(s)
}

// special marks the bytes that stop the fast scan of a string: the quote, the backslash, control
// characters (not allowed raw) and non-ASCII bytes (which need a UTF-8 check).
var special = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf
	}
	return t
}()

// str consumes a string and returns its unescaped content. Invalid UTF-8 becomes U+FFFD, as in
// encoding/json, because proto3 strings must be valid UTF-8. The result aliases the input when the
// string needs no change, else d.scratch; either way it is only valid until the next call.
func (d *decoder) str() ([]byte, error) {
	b := d.buf
	start := d.pos + 1
	i := start
	for i < len(b) && !special[b[i]] {
		i++
	}
	if i < len(b) && b[i] == '"' {
		d.pos = i + 1
		return b[start:i], nil
	}
	// Valid non-ASCII text without escapes (Chinese group names) can still stay in place.
	for i < len(b) {
		c := b[i]
		if !special[c] {
			i++
			continue
		}
		if c == '"' {
			d.pos = i + 1
			return b[start:i], nil
		}
		if c < utf8.RuneSelf {
			break
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			break
		}
		i += n
	}
	out, err := d.unescape(append(d.scratch[:0], b[start:i]...), i)
	d.scratch = out
	return out, err
}

// unescape appends the rest of the string starting at b[i] to out, decoding escapes and replacing
// invalid UTF-8, and consumes the closing quote.
func (d *decoder) unescape(out []byte, i int) ([]byte, error) {
	b := d.buf
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return out, nil
		case c == '\\':
			if i+1 >= len(b) {
				return out, d.eof()
			}
			switch e := b[i+1]; e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, err := d.hex4(i + 2)
				if err != nil {
					return out, err
				}
				i += 6
				if utf16.IsSurrogate(r) {
					// A pair decodes to one rune; anything else is a lone surrogate, which becomes
					// U+FFFD while the escape after it, if any, is decoded on its own.
					r2 := rune(-1)
					if i+5 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
						if v, ok := hexValue(b[i+2 : i+6]); ok {
							r2 = v
						}
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
				continue
			default:
				return out, d.unexpected(i+1, "in string escape code")
			}
			i += 2
		case c < 0x20:
			return out, d.unexpected(i, "in string literal")
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, b[i:i+n]...)
			}
			i += n
		}
	}
	return out, d.eof()
}

// hexValue decodes four hex digits.
func hexValue(h []byte) (rune, bool) {
	var r rune
	for _, c := range h {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// hex4 decodes the four hex digits of a \u escape starting at i.
func (d *decoder) hex4(i int) (rune, error) {
	if i+4 <= len(d.buf) {
		if r, ok := hexValue(d.buf[i : i+4]); ok {
			return r, nil
		}
	}
	for j := i; j < i+4 && j < len(d.buf); j++ {
		if _, ok := hexValue([]byte{d.buf[j], '0', '0', '0'}); !ok {
			return 0, d.unexpected(j, "in \\u hexadecimal character escape")
		}
	}
	return 0, d.eof()
}

// skipStr consumes a string without decoding it, checking only what JSON forbids.
func (d *decoder) skipStr() error {
	b := d.buf
	i := d.pos + 1
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return nil
		case c == '\\':
			if i+1 >= len(b) {
				return d.eof()
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, err := d.hex4(i + 2); err != nil {
					return err
				}
				i += 6
			default:
				return d.unexpected(i+1, "in string escape code")
			}
		case c < 0x20:
			return d.unexpected(i, "in string literal")
		default:
			// Invalid UTF-8 is allowed in JSON text (encoding/json replaces it), so no check.
			i++
		}
	}
	return d.eof()
}

// number consumes a number and returns its text, checked against JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) number() ([]byte, error) {
	start := d.pos
	end, ok := scanNumber(d.buf, start)
	if !ok {
		return nil, d.unexpected(end, "in numeric literal")
	}
	d.pos = end
	return d.buf[start:end], nil
}

// scanNumber returns the end of the number starting at b[i], or the offset of the first byte that
// breaks the grammar (len(b) if the input ends early) and false. What follows a valid number is the
// caller's to check.
func scanNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return i, false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		i = digits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		i = digits(b, i)
	}
	return i, true
}

// isNumber reports whether all of s is one JSON number: the test for numbers sent as strings.
func isNumber(s []byte) bool {
	end, ok := scanNumber(s, 0)
	return ok && end == len(s)
}

func digits(b []byte, i int) int {
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// literal consumes the literal word (true, false or null) whose first byte is at pos.
func (d *decoder) literal(word string) error {
	for j := 0; j < len(word); j++ {
		if d.pos+j >= len(d.buf) {
			return d.eof()
		}
		if d.buf[d.pos+j] != word[j] {
			return d.unexpected(d.pos+j, "in literal "+word+" (expecting "+strconv.QuoteRune(rune(word[j]))+")")
		}
	}
	d.pos += len(word)
	return nil
}

// skip consumes any value, checking its syntax: the value of an unknown key must still be JSON.
func (d *decoder) skip() error {
	switch c := d.buf[d.pos]; c {
	case '"':
		return d.skipStr()
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	case '{':
		empty, err := d.open('}')
		if empty || err != nil {
			return err
		}
		for {
			if d.buf[d.pos] != '"' {
				return d.unexpected(d.pos, "looking for beginning of object key string")
			}
			if err := d.skipStr(); err != nil {
				return err
			}
			if err := d.colon(); err != nil {
				return err
			}
			if err := d.skip(); err != nil {
				return err
			}
			if done, err := d.afterValue('}'); done || err != nil {
				return err
			}
		}
	case '[':
		empty, err := d.open(']')
		if empty || err != nil {
			return err
		}
		for {
			if err := d.skip(); err != nil {
				return err
			}
			if done, err := d.afterValue(']'); done || err != nil {
				return err
			}
		}
	}
	if c := d.buf[d.pos]; c == '-' || isDigit(c) {
		_, err := d.number()
		return err
	}
	return d.unexpected(d.pos, "looking for beginning of value")
}

// jsonType names the JSON type of the value starting with c, for error messages; "" if no value
// starts with c.
func jsonType(c byte) string {
	switch {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "bool"
	case c == 'n':
		return "null"
	case c == '-' || isDigit(c):
		return "number"
	}
	return ""
}
