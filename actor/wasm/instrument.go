package wasm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Fuel metering by instrumentation. A wall-clock timeout would reject a
// command on a slow replica and accept it on a fast one; counting instead
// gives every replica the same verdict. instrument rewrites a module so that
// a new mutable i64 global (exported as fuelExport) is charged at every
// function entry and every loop header (see meterFunc for how much), and
// traps with unreachable when it falls below zero. It also
// exports each module-defined mutable global (globalExportPrefix+index) so
// the host can snapshot and restore the instance's whole state.

const (
	fuelExport         = "rhizon_fuel"
	globalExportPrefix = "rhizon_g"
)

// Section ids of the binary format.
const (
	secCustom = 0
	secImport = 2
	secMemory = 5
	secGlobal = 6
	secExport = 7
	secCode   = 10
)

type reader struct {
	b   []byte
	off int
}

var errTruncated = errors.New("truncated module")

func (r *reader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errTruncated
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

// leb reads an unsigned LEB128 value; signed values are skipped with it too
// (only their length matters here).
func (r *reader) leb() (uint64, error) {
	var v uint64
	for shift := 0; shift < 70; shift += 7 {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, nil
		}
	}
	return 0, errors.New("malformed LEB128 number")
}

func (r *reader) bytes(n uint64) ([]byte, error) {
	if uint64(len(r.b)-r.off) < n {
		return nil, errTruncated
	}
	b := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return b, nil
}

func (r *reader) skip(n int) error {
	_, err := r.bytes(uint64(n))
	return err
}

func (r *reader) lebs(n int) error {
	for range n {
		if _, err := r.leb(); err != nil {
			return err
		}
	}
	return nil
}

func appendLEB(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendSection(out []byte, id byte, body []byte) []byte {
	out = append(out, id)
	out = appendLEB(out, uint64(len(body)))
	return append(out, body...)
}

type section struct {
	id   byte
	body []byte
}

// instrument returns the metered module (see above) or an error naming what
// it cannot handle.
func instrument(src []byte) (out []byte, globals []string, err error) {
	if len(src) < 8 || string(src[:4]) != "\x00asm" || binary.LittleEndian.Uint32(src[4:8]) != 1 {
		return nil, nil, errors.New("not a WebAssembly 1.0 binary module (bad magic or version)")
	}
	r := &reader{b: src, off: 8}
	var secs []section
	for r.off < len(src) {
		id, err := r.byte()
		if err != nil {
			return nil, nil, err
		}
		n, err := r.leb()
		if err != nil {
			return nil, nil, err
		}
		body, err := r.bytes(n)
		if err != nil {
			return nil, nil, fmt.Errorf("section %d: %w", id, err)
		}
		secs = append(secs, section{id, body})
	}

	var importedGlobals uint64
	var mutable []uint64 // indexes of module-defined mutable globals
	definedGlobals := uint64(0)
	for _, s := range secs {
		switch s.id {
		case secImport:
			importedGlobals, err = countImportedGlobals(s.body)
		case secGlobal:
			definedGlobals, mutable, err = scanGlobals(s.body)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	fuel := importedGlobals + definedGlobals
	for i := range mutable {
		mutable[i] += importedGlobals
	}

	out = append([]byte(nil), src[:8]...)
	wroteGlobal, wroteExport := false, false
	for _, s := range secs {
		// The global section comes after memory and before export; a module
		// without one gets it there.
		if !wroteGlobal && s.id != secCustom && order(s.id) > order(secGlobal) {
			out = appendSection(out, secGlobal, addGlobal(nil, 0))
			wroteGlobal = true
		}
		if !wroteExport && s.id != secCustom && order(s.id) > order(secExport) {
			out = appendSection(out, secExport, addExports(nil, 0, fuel, mutable))
			wroteExport = true
		}
		switch s.id {
		case secGlobal:
			out = appendSection(out, secGlobal, addGlobal(s.body[lebLen(s.body):], definedGlobals))
			wroteGlobal = true
		case secExport:
			er := &reader{b: s.body}
			n, err := er.leb()
			if err != nil {
				return nil, nil, err
			}
			out = appendSection(out, secExport, addExports(s.body[er.off:], n, fuel, mutable))
			wroteExport = true
		case secCode:
			body, err := meterCode(s.body, fuel)
			if err != nil {
				return nil, nil, err
			}
			out = appendSection(out, secCode, body)
		default:
			out = appendSection(out, s.id, s.body)
		}
	}
	if !wroteGlobal || !wroteExport {
		return nil, nil, errors.New("module has no code section")
	}
	for _, g := range mutable {
		globals = append(globals, globalExportPrefix+strconv.FormatUint(g, 10))
	}
	return out, globals, nil
}

// order is a section's place in the binary format's required order.
func order(id byte) int {
	switch id {
	case 13: // tag
		return 55
	case 12: // data count
		return 95
	case 10, 11:
		return int(id)*10 + 10
	}
	return int(id) * 10
}

func lebLen(b []byte) int {
	r := &reader{b: b}
	_, _ = r.leb()
	return r.off
}

func countImportedGlobals(body []byte) (uint64, error) {
	r := &reader{b: body}
	n, err := r.leb()
	if err != nil {
		return 0, err
	}
	var globals uint64
	for range n {
		for range 2 { // module and field names
			l, err := r.leb()
			if err != nil {
				return 0, err
			}
			if err := r.skip(int(l)); err != nil {
				return 0, err
			}
		}
		kind, err := r.byte()
		if err != nil {
			return 0, err
		}
		switch kind {
		case 0: // function: type index
			err = r.lebs(1)
		case 1: // table: reftype, limits
			if err = r.skip(1); err == nil {
				err = skipLimits(r)
			}
		case 2: // memory
			err = skipLimits(r)
		case 3: // global: valtype, mutability
			globals++
			err = r.skip(2)
		case 4: // tag: attribute, type index
			if err = r.skip(1); err == nil {
				err = r.lebs(1)
			}
		default:
			return 0, fmt.Errorf("import of unknown kind %d", kind)
		}
		if err != nil {
			return 0, err
		}
	}
	return globals, nil
}

func skipLimits(r *reader) error {
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if flags&1 != 0 {
		return r.lebs(2)
	}
	return r.lebs(1)
}

func scanGlobals(body []byte) (uint64, []uint64, error) {
	r := &reader{b: body}
	n, err := r.leb()
	if err != nil {
		return 0, nil, err
	}
	var mutable []uint64
	for i := range n {
		t, err := r.byte()
		if err != nil {
			return 0, nil, err
		}
		if t < 0x7b || t > 0x7f {
			return 0, nil, fmt.Errorf("global %d has type 0x%x; only numeric globals are supported", i, t)
		}
		mut, err := r.byte()
		if err != nil {
			return 0, nil, err
		}
		if mut == 1 {
			mutable = append(mutable, i)
		}
		if err := skipExpr(r); err != nil {
			return 0, nil, fmt.Errorf("global %d: %w", i, err)
		}
	}
	return n, mutable, nil
}

// skipExpr reads instructions up to the end closing the expression.
func skipExpr(r *reader) error {
	depth := 0
	for {
		op, err := r.byte()
		if err != nil {
			return err
		}
		switch op {
		case 0x02, 0x03, 0x04:
			depth++
		case 0x0b:
			if depth == 0 {
				return nil
			}
			depth--
		}
		if err := skipImmediates(op, r); err != nil {
			return err
		}
	}
}

// initFuel is the fuel global's initial value: the budget of the module's
// start functions (the Go runtime's initialisation), run at load.
const initFuel = 1 << 30

// addGlobal appends the fuel global (i64, mutable, initially initFuel) to
// the entries of a global section (entries: the section without its count).
func addGlobal(entries []byte, count uint64) []byte {
	b := appendLEB(nil, count+1)
	b = append(b, entries...)
	b = append(b, 0x7e, 0x01, 0x42)
	b = appendSLEB(b, initFuel)
	return append(b, 0x0b)
}

func appendSLEB(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func addExports(entries []byte, count, fuel uint64, mutable []uint64) []byte {
	b := appendLEB(nil, count+1+uint64(len(mutable)))
	b = append(b, entries...)
	exp := func(name string, idx uint64) {
		b = appendLEB(b, uint64(len(name)))
		b = append(b, name...)
		b = append(b, 3) // global
		b = appendLEB(b, idx)
	}
	exp(fuelExport, fuel)
	for _, g := range mutable {
		exp(globalExportPrefix+strconv.FormatUint(g, 10), g)
	}
	return b
}

// fuelCheck is the code inserted at function entries and loop headers,
// charging cost units:
//
//	global.get F; i64.const cost; i64.sub; global.set F; global.get F
//	i64.const 0; i64.lt_s; if; unreachable; end
func fuelCheck(out []byte, f uint64, cost int64) []byte {
	out = append(out, 0x23)
	out = appendLEB(out, f)
	out = append(out, 0x42)
	out = appendSLEB(out, cost)
	out = append(out, 0x7d, 0x24)
	out = appendLEB(out, f)
	out = append(out, 0x23)
	out = appendLEB(out, f)
	return append(out, 0x42, 0x00, 0x53, 0x04, 0x40, 0x00, 0x0b)
}

func meterCode(body []byte, fuel uint64) ([]byte, error) {
	r := &reader{b: body}
	n, err := r.leb()
	if err != nil {
		return nil, err
	}
	out := appendLEB(make([]byte, 0, len(body)+len(body)/8), n)
	var fn []byte
	var costs []int64
	for i := range n {
		size, err := r.leb()
		if err != nil {
			return nil, err
		}
		code, err := r.bytes(size)
		if err != nil {
			return nil, err
		}
		fn, costs, err = meterFunc(fn[:0], costs[:0], code, fuel)
		if err != nil {
			return nil, fmt.Errorf("function body %d: %w", i, err)
		}
		out = appendLEB(out, uint64(len(fn)))
		out = append(out, fn...)
	}
	return out, nil
}

// meterFunc charges, at the function's entry, the number of instructions of
// its body outside any loop, and at each loop header the number inside that
// loop outside nested loops: one pass through a function or one iteration
// of a loop executes at most what it was charged (calls and nested loops
// charge for themselves), so fuel bounds the instructions a call executes.
func meterFunc(out []byte, costs []int64, code []byte, fuel uint64) ([]byte, []int64, error) {
	r := &reader{b: code}
	groups, err := r.leb()
	if err != nil {
		return nil, nil, err
	}
	for range groups {
		if err := r.lebs(1); err != nil {
			return nil, nil, err
		}
		if err := r.skip(1); err != nil {
			return nil, nil, err
		}
	}
	body := r.off
	// First pass: the cost of the function (costs[0]) and of each loop, in
	// the order the loops start.
	costs = append(costs, 0)
	type frame struct {
		loop bool
		cost int // index into costs
	}
	stack := []frame{{cost: 0}}
	cur := 0
	for r.off < len(code) {
		start := r.off
		op, _ := r.byte()
		if err := skipImmediates(op, r); err != nil {
			return nil, nil, fmt.Errorf("at byte %d: %w", start, err)
		}
		costs[cur]++
		switch op {
		case 0x02, 0x04: // block, if
			stack = append(stack, frame{cost: cur})
		case 0x03: // loop
			costs = append(costs, 0)
			cur = len(costs) - 1
			stack = append(stack, frame{loop: true, cost: cur})
		case 0x0b: // end
			if len(stack) == 0 {
				return nil, nil, fmt.Errorf("at byte %d: unbalanced end", start)
			}
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				// Back in the enclosing frame's cost (a loop's, or the
				// function's).
				for i := len(stack) - 1; i >= 0; i-- {
					if stack[i].loop || i == 0 {
						cur = stack[i].cost
						break
					}
				}
			}
		}
	}
	// Second pass: copy, inserting the checks.
	out = append(out, code[:body]...)
	out = fuelCheck(out, fuel, costs[0])
	r.off = body
	next := 1
	for r.off < len(code) {
		start := r.off
		op, _ := r.byte()
		_ = skipImmediates(op, r)
		out = append(out, code[start:r.off]...)
		if op == 0x03 {
			out = fuelCheck(out, fuel, costs[next])
			next++
		}
	}
	return out, costs, nil
}

// skipImmediates consumes the immediates of opcode op.
func skipImmediates(op byte, r *reader) error {
	switch {
	case op == 0x02 || op == 0x03 || op == 0x04: // block type
		c, err := r.byte()
		if err != nil {
			return err
		}
		if c == 0x40 || (c >= 0x6f && c <= 0x7f) {
			return nil
		}
		r.off--
		return r.lebs(1)
	case op == 0x0c || op == 0x0d || op == 0x10 || op == 0x12 || op == 0xd2 ||
		(op >= 0x20 && op <= 0x26):
		return r.lebs(1)
	case op == 0x0e: // br_table
		n, err := r.leb()
		if err != nil {
			return err
		}
		return r.lebs(int(n) + 1)
	case op == 0x11 || op == 0x13:
		return r.lebs(2)
	case op == 0x1c: // select t*
		n, err := r.leb()
		if err != nil {
			return err
		}
		return r.skip(int(n))
	case op >= 0x28 && op <= 0x3e: // memarg
		align, err := r.leb()
		if err != nil {
			return err
		}
		if align&0x40 != 0 { // multi-memory index
			if err := r.lebs(1); err != nil {
				return err
			}
		}
		return r.lebs(1)
	case op == 0x3f || op == 0x40 || op == 0x41 || op == 0x42 || op == 0xd0:
		return r.lebs(1)
	case op == 0x43:
		return r.skip(4)
	case op == 0x44:
		return r.skip(8)
	case op <= 0x01 || op == 0x05 || op == 0x0b || op == 0x0f || op == 0x1a || op == 0x1b ||
		(op >= 0x45 && op <= 0xc4) || op == 0xd1:
		return nil
	case op == 0xfc:
		sub, err := r.leb()
		if err != nil {
			return err
		}
		switch {
		case sub <= 7:
			return nil
		case sub == 8 || sub == 10 || sub == 12 || sub == 14:
			return r.lebs(2)
		case sub <= 17:
			return r.lebs(1)
		}
		return fmt.Errorf("unknown instruction 0xfc %d", sub)
	case op == 0xfd:
		return errors.New("SIMD instructions are not supported")
	case op == 0xfe:
		return errors.New("atomic (threads) instructions are not allowed")
	}
	return fmt.Errorf("unknown opcode 0x%02x", op)
}
