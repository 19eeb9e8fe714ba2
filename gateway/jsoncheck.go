package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// checkJSONText refuses JSON text that encoding/json would accept but not
// keep as sent: invalid UTF-8 (rewritten to U+FFFD) and an object naming a
// key twice (the last silently wins, while another reader may take the
// first). Syntax errors are left to the caller's decoder, which words them
// for the call. The error reads after "request body" or "payload".
func checkJSONText(b []byte) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("is not valid UTF-8 (first invalid byte at offset %d); send UTF-8 text, and bytes as base64", invalidUTF8At(b))
	}
	// Only an object with two keys or more can repeat one.
	if bytes.IndexByte(b, ',') < 0 {
		return nil
	}
	type frame struct {
		keys      map[string]struct{} // nil for an array
		expectKey bool
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil // a syntax error: the decoder reports it
		}
		if n := len(stack); n > 0 && stack[n-1].keys != nil && stack[n-1].expectKey {
			top := stack[n-1]
			if k, ok := tok.(string); ok {
				if _, dup := top.keys[k]; dup {
					return fmt.Errorf("has a duplicate key %q in one object (at byte %d); give each key once", k, dec.InputOffset())
				}
				top.keys[k] = struct{}{}
				top.expectKey = false
				continue
			}
			// The only other token here is the object's end.
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]struct{}{}, expectKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}
