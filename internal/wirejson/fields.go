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
	// byName maps JSON names, and proto names that are not also some field's JSON name, to fields.
	byName map[string]protoreflect.FieldDescriptor
	// byFold maps case-folded JSON names (see appendFold) to fields, for encoding/json's
	// case-insensitive fallback. On a clash the lower field number wins.
	byFold map[string]protoreflect.FieldDescriptor
	// maxKey bounds the length of a key that can fold to one of byFold's names: a rune is at most
	// four bytes and folds to at least one.
	maxKey int

	// ordered lists the fields by number, the order Marshal writes them in.
	ordered []protoreflect.FieldDescriptor
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
		byName:  make(map[string]protoreflect.FieldDescriptor, 2*list.Len()),
		byFold:  make(map[string]protoreflect.FieldDescriptor, list.Len()),
		ordered: make([]protoreflect.FieldDescriptor, list.Len()),
	}
	for i := range list.Len() {
		f.ordered[i] = list.Get(i)
	}
	slices.SortFunc(f.ordered, func(a, b protoreflect.FieldDescriptor) int {
		return int(a.Number()) - int(b.Number())
	})
	// Proto names first so that a JSON name equal to another field's proto name takes precedence.
	for _, fd := range f.ordered {
		f.byName[string(fd.Name())] = fd
	}
	for _, fd := range f.ordered {
		name := fd.JSONName()
		f.byName[name] = fd
		folded := string(appendFold(nil, []byte(name)))
		if _, dup := f.byFold[folded]; !dup {
			f.byFold[folded] = fd
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
	return f
}

// lookup finds the field for a decoded key: exact JSON name, exact proto name, then JSON name
// ignoring case. buf is scratch space for the folded key; the possibly grown buffer is returned.
func (f *fields) lookup(key, buf []byte) (protoreflect.FieldDescriptor, []byte) {
	if fd, ok := f.byName[string(key)]; ok {
		return fd, buf
	}
	if len(key) > f.maxKey {
		return nil, buf
	}
	buf = appendFold(buf[:0], key)
	return f.byFold[string(buf)], buf
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
