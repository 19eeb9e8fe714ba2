//go:build !wasip1

package sdk

// Outside a WebAssembly module there is no host: these keep the package
// buildable (for vet and for sharing code with native tests).

func unavailable() { panic("sdk: the Context is only available inside a WebAssembly module") }

func hostNow() int64                     { unavailable(); return 0 }
func hostRand() int64                    { unavailable(); return 0 }
func hostVersion() int64                 { unavailable(); return 0 }
func hostSend(_, _, _ string, _ []byte)  { unavailable() }
func hostSetTimer(string, int64, []byte) { unavailable() }
func hostCancelTimer(string)             { unavailable() }
func hostReply([]byte)                   { unavailable() }
