package wirejson

import (
	"slices"
	"sync"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// fields is what decoding and encoding need to know about one message type, computed once per
// descriptor because walking a descriptor on every callback would cost more than the decoding.
type fields struct {
	// byName maps JSON names, and proto names that are not also some field's JSON name, to
	// fields (their index in ordered).
	byName map[string]int
	// byFold maps case-folded JSON names (see appendFold) to fields, for encoding/json's
	// case-insensitive fallback. On a clash the lower field number wins.
	byFold map[string]int
	// maxKey bounds the length of a key that can fold to one of byFold's names: a rune is at most
	// four bytes and folds to at least one.
	maxKey int

	// ordered lists the fields by number, the order Marshal writes them in and the order the
	// vendors' servers (Go structs generated from the same definitions) send them in.
	ordered []protoreflect.FieldDescriptor
	// names[i] is ordered[i]'s JSON name if that name finds ordered[i] in byName, else "": the
	// guess that the next key is the next field's name, checked without hashing.
	names []string
	// keys[i] is `"jsonName":` for ordered[i], escaped once here rather than on every Marshal.
	keys [][]byte
	// oneofs[i] is ordered[i]'s real (not synthetic) oneof, or nil.
	oneofs []protoreflect.OneofDescriptor
}

// cache holds *fields per protoreflect.MessageDescriptor. Descriptors of generated types live for the
// whole program, so the cache does not need evicting.
var cache sync.Map

func fieldsOf(md protoreflect.MessageDescriptor) *fields {
	if f, ok := cache.Load(md); ok {
		return f.(*fields)
	}
	f, _ := cache.LoadOrStore(md, newFields(md))
	return f.(*fields)
}

func newFields(md protoreflect.MessageDescriptor) *fields {
	list := md.Fields()
	f := &fields{
		byName:  make(map[string]int, 2*list.Len()),
		byFold:  make(map[string]int, list.Len()),
		ordered: make([]protoreflect.FieldDescriptor, list.Len()),
	}
	for i := range list.Len() {
		f.ordered[i] = list.Get(i)
	}
	slices.SortFunc(f.ordered, func(a, b protoreflect.FieldDescriptor) int {
		return int(a.Number()) - int(b.Number())
	})
	// Proto names first so that a JSON name equal to another field's proto name takes precedence.
	for i, fd := range f.ordered {
		f.byName[string(fd.Name())] = i
	}
	for i, fd := range f.ordered {
		name := fd.JSONName()
		f.byName[name] = i
		folded := string(appendFold(nil, []byte(name)))
		if _, dup := f.byFold[folded]; !dup {
			f.byFold[folded] = i
		}
		f.maxKey = max(f.maxKey, 4*len(folded))

		key := appendString(nil, name)
		f.keys = append(f.keys, append(key, ':'))
		od := fd.ContainingOneof()
		if od != nil && od.IsSynthetic() {
			od = nil // proto3 optional: encoded like any field with presence
		}
		f.oneofs = append(f.oneofs, od)
	}
	for i, fd := range f.ordered {
		name := fd.JSONName()
		if f.byName[name] != i {
			name = ""
		}
		f.names = append(f.names, name)
	}
	return f
}

// lookup finds the field for a decoded key: exact JSON name, exact proto name, then JSON name
// ignoring case. buf is scratch space for the folded key; the possibly grown buffer is returned.
//
// *next is the index in ordered of the field expected next; lookup checks it first and moves it on
// past a match, which spares the map for bodies that list fields in order (OpenIM's and Tencent's
// do).
func (f *fields) lookup(key, buf []byte, next *int) (protoreflect.FieldDescriptor, []byte) {
	if i := *next; i < len(f.names) && f.names[i] == string(key) {
		*next = i + 1
		return f.ordered[i], buf
	}
	if i, ok := f.byName[string(key)]; ok {
		*next = i + 1
		return f.ordered[i], buf
	}
	if len(key) > f.maxKey {
		return nil, buf
	}
	buf = appendFold(buf[:0], key)
	if i, ok := f.byFold[string(buf)]; ok {
		*next = i + 1
		return f.ordered[i], buf
	}
	return nil, buf
}

// appendFold appends s in a canonical case-folded form: two strings fold to the same bytes exactly
// when strings.EqualFold says they are equal rune by rune. Each rune becomes the smallest member of
// its Unicode simple-folding orbit, so "Kelvin sign" U+212A and 'k' both become 'K'. s must be valid
// UTF-8 (decoded keys always are).
func appendFold(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		i += n
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		dst = utf8.AppendRune(dst, least)
	}
	return dst
}
