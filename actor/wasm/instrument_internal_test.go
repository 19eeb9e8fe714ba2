package wasm

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// module is a module with one function "f" () -> () whose body (without
// the locals and the final end) is code.
func module(code ...byte) []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = append(b, 1, 4, 1, 0x60, 0, 0)         // type: () -> ()
	b = append(b, 3, 2, 1, 0)                  // function 0 has type 0
	b = append(b, 7, 5, 1, 1, 'f', 0x00, 0x00) // export "f" = function 0
	body := append(append([]byte{0}, code...), 0x0b)
	fn := append(appendLEB(nil, uint64(len(body))), body...)
	sec := append([]byte{1}, fn...)
	b = append(b, 10)
	b = appendLEB(b, uint64(len(sec)))
	return append(b, sec...)
}

// TestFuelCharges: a function is charged its instructions outside loops on
// entry and a loop its own on every iteration, and a loop that never ends
// traps with the fuel below zero.
func TestFuelCharges(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	for _, tc := range []struct {
		name string
		code []byte
		used int64 // -1: runs out
	}{
		{"straight", []byte{0x41, 1, 0x1a, 0x41, 2, 0x1a}, 5},            // 4 + end
		{"loop once", []byte{0x03, 0x40, 0x41, 0, 0x0d, 0, 0x0b}, 2 + 3}, // loop, end | i32.const, br_if, end
		{"block", []byte{0x02, 0x40, 0x0b, 0x41, 0, 0x1a}, 5},            // block, end, const, drop, end
		{"endless", []byte{0x03, 0x40, 0x0c, 0, 0x0b}, -1},
	} {
		metered, _, err := instrument(module(tc.code...))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		m, err := rt.InstantiateWithConfig(ctx, metered, wazero.NewModuleConfig().WithName(tc.name))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		fuel := m.ExportedGlobal(fuelExport).(api.MutableGlobal)
		fuel.Set(1000)
		_, err = m.ExportedFunction("f").Call(ctx)
		left := int64(fuel.Get())
		switch {
		case tc.used < 0 && (err == nil || left >= 0):
			t.Errorf("%s: err %v, fuel left %d", tc.name, err, left)
		case tc.used >= 0 && (err != nil || 1000-left != tc.used):
			t.Errorf("%s: err %v, used %d, want %d", tc.name, err, 1000-left, tc.used)
		}
	}
}
