package httpapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
)

// jsonFault finds where data fails to decode into a value of type t: the
// dotted path of the first unknown field or the first value its field's
// type refuses ("transition.bogus", "transition.at", "members[2].mac"),
// and whether that is an unknown field. encoding/json names neither for
// an unknown field nor for an error of a field's UnmarshalJSON (time.Time).
// It returns "" when it finds no fault (the decoder's error is then about
// the document as a whole).
func jsonFault(data []byte, t reflect.Type) (path string, unknown bool) {
	return faultAt(data, t, "")
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

func faultAt(raw []byte, t reflect.Type, path string) (string, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return "", false
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		if json.Unmarshal(raw, reflect.New(t).Interface()) != nil {
			return path, false
		}
		return "", false
	}
	switch t.Kind() {
	case reflect.Struct:
		keys, values, err := objectMembers(raw)
		if err != nil {
			return path, false
		}
		for i, k := range keys {
			ft, ok := structField(t, k)
			p := joinPath(path, k)
			if !ok {
				return p, true
			}
			if f, unknown := faultAt(values[i], ft, p); f != "" {
				return f, unknown
			}
		}
		return "", false
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && t.Kind() == reflect.Slice {
			break // []byte is a base64 string
		}
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return path, false
		}
		for i, it := range items {
			if f, unknown := faultAt(it, t.Elem(), path+"["+strconv.Itoa(i)+"]"); f != "" {
				return f, unknown
			}
		}
		return "", false
	case reflect.Map:
		keys, values, err := objectMembers(raw)
		if err != nil {
			return path, false
		}
		for i, k := range keys {
			if f, unknown := faultAt(values[i], t.Elem(), joinPath(path, k)); f != "" {
				return f, unknown
			}
		}
		return "", false
	}
	if json.Unmarshal(raw, reflect.New(t).Interface()) != nil {
		return path, false
	}
	return "", false
}

// objectMembers reads a JSON object's members in document order.
func objectMembers(raw []byte) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // {
		return nil, nil, err
	}
	var keys []string
	var values []json.RawMessage
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, ok := tok.(string)
		if !ok {
			return nil, nil, &json.SyntaxError{}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		keys, values = append(keys, k), append(values, v)
	}
	return keys, values, nil
}

// structField finds the field encoding/json decodes key into: by its json
// name, case-insensitively as encoding/json does, through embedded
// structs.
func structField(t reflect.Type, key string) (reflect.Type, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				if ft, ok := structField(et, key); ok {
					return ft, true
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if strings.EqualFold(name, key) {
			return f.Type, true
		}
	}
	return nil, false
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
