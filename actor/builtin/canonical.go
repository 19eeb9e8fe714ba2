package builtin

import (
	"bytes"
	"slices"
	"unicode/utf8"
)

// kv documents go through canonicalJSON on every replica, in Validate, Decide
// and Evolve, and their state through encoding/json: that was about 15% of a
// node's CPU in w1-occ. canonScan writes the canonical form of the plain
// documents clients send (any key order and whitespace, strings without
// escapes or HTML characters) in one pass without reflection. Anything else
// (an escape, a duplicate key, deep nesting, invalid JSON) makes it give up,
// and encoding/json decides, so results and error messages stay exactly what
// canonicalJSON gives; FuzzCanonScanMatchesEncodingJSON checks that.

// maxCanonDepth bounds the scan's recursion; deeper documents take the slow
// path, whose own limit then applies.
const maxCanonDepth = 64

type canonScan struct {
	jsonScan
	depth int
}

// fastCanonical returns the canonical form of b, one JSON value with optional
// surrounding whitespace, or ok false when the slow path must decide.
func fastCanonical(b []byte) (out []byte, ok bool) {
	s := canonScan{jsonScan: jsonScan{b: b}}
	s.skipSpace()
	out, ok = s.value(make([]byte, 0, len(b)))
	s.skipSpace()
	return out, ok && s.i == len(b)
}

// value appends the canonical form of the value at s.i to out.
func (s *canonScan) value(out []byte) ([]byte, bool) {
	if s.i >= len(s.b) {
		return out, false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(out)
	case c == '[':
		return s.array(out)
	case c == '"':
		return s.str(out)
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number(out)
	}
	for _, lit := range [...]string{"true", "false", "null"} {
		if bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
			s.i += len(lit)
			return append(out, lit...), true
		}
	}
	return out, false
}

// memberSpan is where one object member was written in out: the key's quotes
// at start and keyEnd, the value up to end.
type memberSpan struct{ start, keyEnd, end int }

func (s *canonScan) object(out []byte) ([]byte, bool) {
	if s.depth++; s.depth > maxCanonDepth {
		return out, false
	}
	defer func() { s.depth-- }()
	s.i++ // '{'
	out = append(out, '{')
	base := len(out)
	var stack [16]memberSpan
	members := stack[:0]
	sorted := true
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return append(out, '}'), true
	}
	for {
		if len(members) > 0 {
			out = append(out, ',')
		}
		m := memberSpan{start: len(out)}
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return out, false
		}
		var ok bool
		if out, ok = s.str(out); !ok {
			return out, false
		}
		m.keyEnd = len(out) - 1
		s.skipSpace()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return out, false
		}
		s.i++
		out = append(out, ':')
		s.skipSpace()
		if out, ok = s.value(out); !ok {
			return out, false
		}
		m.end = len(out)
		if n := len(members); n > 0 {
			// encoding/json sorts the keys of a map bytewise; a string without
			// escapes is its own decoded form. A duplicate key would be
			// resolved last-wins: leave that to the slow path.
			switch bytes.Compare(key(out, members[n-1]), key(out, m)) {
			case 0:
				return out, false
			case 1:
				sorted = false
			}
		}
		members = append(members, m)
		s.skipSpace()
		if s.i >= len(s.b) {
			return out, false
		}
		c := s.b[s.i]
		s.i++
		if c == '}' {
			break
		}
		if c != ',' {
			return out, false
		}
		s.skipSpace()
	}
	if !sorted {
		body := bytes.Clone(out[base:])
		slices.SortFunc(members, func(a, b memberSpan) int {
			return bytes.Compare(body[a.start-base+1:a.keyEnd-base], body[b.start-base+1:b.keyEnd-base])
		})
		out = out[:base]
		for i, m := range members {
			if i > 0 {
				if bytes.Equal(body[members[i-1].start-base+1:members[i-1].keyEnd-base], body[m.start-base+1:m.keyEnd-base]) {
					return out, false
				}
				out = append(out, ',')
			}
			out = append(out, body[m.start-base:m.end-base]...)
		}
	}
	return append(out, '}'), true
}

func key(out []byte, m memberSpan) []byte { return out[m.start+1 : m.keyEnd] }

func (s *canonScan) array(out []byte) ([]byte, bool) {
	if s.depth++; s.depth > maxCanonDepth {
		return out, false
	}
	defer func() { s.depth-- }()
	s.i++ // '['
	out = append(out, '[')
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return append(out, ']'), true
	}
	for n := 0; ; n++ {
		if n > 0 {
			out = append(out, ',')
		}
		var ok bool
		if out, ok = s.value(out); !ok {
			return out, false
		}
		s.skipSpace()
		if s.i >= len(s.b) {
			return out, false
		}
		c := s.b[s.i]
		s.i++
		if c == ']' {
			return append(out, ']'), true
		}
		if c != ',' {
			return out, false
		}
		s.skipSpace()
	}
}

// str copies a string that encoding/json writes back byte for byte: valid
// UTF-8 without escapes, control characters, <, >, & (escaped for HTML) and
// U+2028, U+2029 (escaped for JavaScript).
func (s *canonScan) str(out []byte) ([]byte, bool) {
	start := s.i
	s.i++ // '"'
	for s.i < len(s.b) {
		c := s.b[s.i]
		if plainASCII[c] {
			s.i++
			continue
		}
		switch {
		case c == '"':
			s.i++
			return append(out, s.b[start:s.i]...), true
		case c < utf8.RuneSelf: // a control character, \, <, > or &
			return out, false
		default:
			r, size := utf8.DecodeRune(s.b[s.i:])
			if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
				return out, false
			}
			s.i += size
		}
	}
	return out, false
}

// plainASCII marks the ASCII bytes encoding/json writes in a string as they
// are.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// number copies a JSON number: encoding/json keeps a json.Number's text.
func (s *canonScan) number(out []byte) ([]byte, bool) {
	start := s.i
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return out, false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if !s.digits() {
			return out, false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return out, false
		}
	}
	return append(out, s.b[start:s.i]...), true
}

// digits consumes one or more digits.
func (s *canonScan) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}
