//go:build wasip1

package sdk

import "unsafe"

// The host calls (module "rhizon"), documented in the README under
// "WebAssembly actors". Pointers are offsets in this module's memory; the
// host copies what they point to before returning.

//go:wasmimport rhizon now
func rhizonNow() int64

//go:wasmimport rhizon rand
func rhizonRand() int64

//go:wasmimport rhizon version
func rhizonVersion() int64

//go:wasmimport rhizon emit
func rhizonEmit(name string, payload unsafe.Pointer, payloadLen uint32)

//go:wasmimport rhizon emit_versioned
func rhizonEmitVersioned(name string, schemaVersion uint32, payload unsafe.Pointer, payloadLen uint32)

//go:wasmimport rhizon upcasted
func rhizonUpcasted(eventType string, schemaVersion uint32, payload unsafe.Pointer, payloadLen uint32)

//go:wasmimport rhizon reject
func rhizonReject(invalid uint32, code string, message string)

//go:wasmimport rhizon send
func rhizonSend(actorType string, entityID string, cmdType string, payload unsafe.Pointer, payloadLen uint32)

//go:wasmimport rhizon set_timer
func rhizonSetTimer(name string, at int64, payload unsafe.Pointer, payloadLen uint32)

//go:wasmimport rhizon cancel_timer
func rhizonCancelTimer(name string)

//go:wasmimport rhizon reply
func rhizonReply(b unsafe.Pointer, n uint32)

//go:wasmimport rhizon output
func rhizonOutput(b unsafe.Pointer, n uint32)

func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

func hostNow() int64     { return rhizonNow() }
func hostRand() int64    { return rhizonRand() }
func hostVersion() int64 { return rhizonVersion() }
func hostSend(actorType, entityID, cmdType string, payload []byte) {
	rhizonSend(actorType, entityID, cmdType, ptr(payload), uint32(len(payload)))
}
func hostSetTimer(name string, at int64, payload []byte) {
	rhizonSetTimer(name, at, ptr(payload), uint32(len(payload)))
}
func hostCancelTimer(name string) { rhizonCancelTimer(name) }
func hostReply(b []byte)          { rhizonReply(ptr(b), uint32(len(b))) }

// buf holds the inputs of a call: the host asks for room with
// rhizon_buffer, writes state, type and payload one after the other, then
// calls rhizon_decide or rhizon_evolve with their lengths.
var buf []byte

//go:wasmexport rhizon_buffer
func rhizonBuffer(n uint32) uint32 {
	if uint32(cap(buf)) < n || cap(buf) == 0 {
		buf = make([]byte, max(n, 4096))
	}
	buf = buf[:cap(buf)]
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
}

// Results of rhizon_decide and rhizon_evolve.
const (
	resultOK       = 0
	resultRejected = 1
)

func split(stateLen, typeLen, payloadLen uint32) (state []byte, typ string, payload []byte) {
	state = buf[:stateLen:stateLen]
	t := buf[stateLen : stateLen+typeLen]
	payload = buf[stateLen+typeLen : stateLen+typeLen+payloadLen : stateLen+typeLen+payloadLen]
	return state, unsafe.String(unsafe.SliceData(t), len(t)), payload
}

//go:wasmexport rhizon_decide
func rhizonDecide(stateLen, typeLen, payloadLen uint32) uint32 {
	state, typ, payload := split(stateLen, typeLen, payloadLen)
	evs, err := registered.Decide(&Context{}, state, typ, payload)
	if err != nil {
		reject(err)
		return resultRejected
	}
	for _, e := range evs {
		if e.SchemaVersion > 1 {
			rhizonEmitVersioned(e.Name, e.SchemaVersion, ptr(e.Payload), uint32(len(e.Payload)))
		} else {
			rhizonEmit(e.Name, ptr(e.Payload), uint32(len(e.Payload)))
		}
	}
	return resultOK
}

//go:wasmexport rhizon_evolve
func rhizonEvolve(stateLen, typeLen, payloadLen uint32) uint32 {
	state, typ, payload := split(stateLen, typeLen, payloadLen)
	next, err := registered.Evolve(state, typ, payload)
	if err != nil {
		reject(err)
		return resultRejected
	}
	rhizonOutput(ptr(next), uint32(len(next)))
	return resultOK
}

func reject(err error) {
	if r, ok := err.(*Rejection); ok {
		inv := uint32(0)
		if r.Invalid {
			inv = 1
		}
		rhizonReject(inv, r.Code, r.Message)
		return
	}
	rhizonReject(0, "error", err.Error())
}

// Results of rhizon_upcast.
const (
	upcastOK       = 0
	upcastRejected = 1
	upcastNone     = 2 // no Upcast registered: the host stops asking
)

//go:wasmexport rhizon_upcast
func rhizonUpcast(typeLen, payloadLen, schemaVersion uint32) uint32 {
	if upcast == nil {
		return upcastNone
	}
	_, typ, payload := split(0, typeLen, payloadLen)
	t, v, p, err := upcast(typ, schemaVersion, payload)
	if err != nil {
		reject(err)
		return upcastRejected
	}
	rhizonUpcasted(t, v, ptr(p), uint32(len(p)))
	return upcastOK
}

//go:wasmexport rhizon_verbs
func rhizonVerbs() {
	var b []byte
	for i, v := range registered.Verbs {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, v...)
	}
	rhizonOutput(ptr(b), uint32(len(b)))
}
