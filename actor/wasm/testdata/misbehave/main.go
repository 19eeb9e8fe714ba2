// Command misbehave is a test actor ("probe") whose verbs exercise the
// runtime's limits: spin loops forever, alloc holds more memory than the
// limit, panic panics, now and effects use the context.
package main

import (
	"strconv"
	"time"

	"github.com/rhizon/rhizon/actor/wasm/sdk"
)

func init() {
	sdk.Register(sdk.Actor{
		Verbs:  []string{"alloc", "count", "effects", "now", "panic", "spin"},
		Decide: decide,
		Evolve: func(state []byte, _ string, payload []byte) ([]byte, error) { return append(state, payload...), nil },
	})
}

func main() {}

var sink int64

var hold [][]byte

var calls int64

func decide(ctx *sdk.Context, _ []byte, cmdType string, payload []byte) ([]sdk.Event, error) {
	switch cmdType[len("cmd.probe."):] {
	case "spin":
		for i := int64(0); ; i++ {
			sink += i
		}
	case "alloc":
		for range 4096 {
			hold = append(hold, make([]byte, 1<<20))
		}
		return nil, nil
	case "panic":
		var s []int
		_ = s[len(payload)+5]
	case "now":
		// time.Now reads the host's clock stub: the entry's logical time.
		return []sdk.Event{{Name: "now", Payload: []byte(strconv.FormatInt(ctx.Now(), 10) + " " +
			strconv.FormatInt(time.Now().UnixMilli(), 10) + " " + strconv.FormatUint(ctx.Rand(), 10))}}, nil
	case "count":
		// Module state that lives across calls: the runtime restores the
		// instance per log entry, so this counts the calls of one entry.
		calls++
		return []sdk.Event{{Name: "count", Payload: []byte(strconv.FormatInt(calls, 10))}}, nil
	case "effects":
		ctx.Send("probe", "other", "cmd.probe.now", []byte(`{}`))
		ctx.SetTimer("t1", ctx.Now()+1000, []byte(`{"x":1}`))
		ctx.Reply([]byte(`{"version":` + strconv.FormatUint(ctx.Version(), 10) + `}`))
		return []sdk.Event{{Name: "did", Payload: []byte(`{}`)}}, nil
	}
	return nil, sdk.Reject("nope", "unknown")
}
