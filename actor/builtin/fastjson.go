package builtin

import "strconv"

// jsonScan reads the few exact JSON shapes of hot payloads and states (such
// as {"amount":5}) without encoding/json's reflection and allocations. It
// accepts a strict subset of JSON: a caller that sees it fail falls back to
// encoding/json, which then decides, so every result and error message stays
// what encoding/json gives.
type jsonScan struct {
	b []byte
	i int
}

func (s *jsonScan) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// byte consumes c after optional whitespace.
func (s *jsonScan) byte(c byte) bool {
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// key consumes "name" and the colon after it. The name must match exactly,
// byte for byte: encoding/json would also take escapes and other letter cases,
// which the fallback handles.
func (s *jsonScan) key(name string) bool {
	if !s.byte('"') {
		return false
	}
	if len(s.b)-s.i < len(name)+1 || string(s.b[s.i:s.i+len(name)]) != name || s.b[s.i+len(name)] != '"' {
		return false
	}
	s.i += len(name) + 1
	return s.byte(':')
}

// int64 consumes a JSON integer (no fraction, no exponent) within the int64
// range.
func (s *jsonScan) int64() (int64, bool) {
	s.skipSpace()
	neg := s.i < len(s.b) && s.b[s.i] == '-'
	if neg {
		s.i++
	}
	start := s.i
	var u uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		if s.i-start == 19 { // 20 digits exceed the int64 range
			return 0, false
		}
		u = u*10 + uint64(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - start
	if digits == 0 || (digits > 1 && s.b[start] == '0') {
		return 0, false
	}
	if s.i < len(s.b) {
		if c := s.b[s.i]; c == '.' || c == 'e' || c == 'E' {
			return 0, false
		}
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return int64(-u), true // -(1<<63) wraps to MinInt64, as it should
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}

// end reports whether only whitespace is left.
func (s *jsonScan) end() bool {
	s.skipSpace()
	return s.i == len(s.b)
}

// appendIntField appends "name":v as encoding/json writes an int64 field.
func appendIntField(b []byte, name string, v int64) []byte {
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}
