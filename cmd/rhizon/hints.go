package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// defaultGRPCPort is the gateway's gRPC port in `rhizon dev` and `rhizon
// node` alike.
const defaultGRPCPort = "7400"

// withDefaultPort is addr with the gateway's gRPC port added when it has
// none: gRPC would otherwise dial "localhost" at 443.
func withDefaultPort(addr string) string {
	if addr == "" || strings.Contains(addr, "://") {
		return addr
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	host := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	return net.JoinHostPort(host, defaultGRPCPort)
}

// explain adds to a failed call what it most likely means and what to do,
// for the mistakes a newcomer makes first: no node running, the HTTP port
// given as the gRPC one, no token.
func explain(addr string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "http2: frame too large") || strings.Contains(msg, "http2: failed reading the frame payload"):
		return fmt.Errorf("%s answers HTTP/1, not gRPC: it looks like a node's HTTP/JSON port (--http-addr, 7401 by default); "+
			"point --addr (RHIZON_ADDR) at its gRPC port (--grpc-addr, %s by default): %w", addr, defaultGRPCPort, err)
	case strings.Contains(msg, "connection refused"):
		return fmt.Errorf("no Rhizon node listens at %s (connection refused): start one with `make run` (or `rhizon dev`), "+
			"or point --addr (RHIZON_ADDR) at a running node's gRPC port: %w", addr, err)
	case status.Code(err) == codes.Unauthenticated && strings.Contains(msg, "missing bearer token"):
		return fmt.Errorf("%w (the CLI: pass --token or set RHIZON_TOKEN; `make run` prints a dev token)", err)
	}
	return err
}

// callErr is a failed call's exit error, explained.
func (f *clientFlags) callErr(err error) error {
	return &exitErr{exitError, explain(f.addr, err)}
}

// sendErr is callErr for a submitted command: a violation (PermissionDenied:
// the token may not act on that address, and the attempt was audited) exits
// like a rejection, since retrying cannot change the answer.
func (f *clientFlags) sendErr(err error) error {
	if status.Code(err) == codes.PermissionDenied {
		return &exitErr{exitRejected, explain(f.addr, err)}
	}
	return f.callErr(err)
}

// maxPayload bounds a payload read from a file or stdin; the gateway refuses
// larger commands anyway, and this keeps a wrong file from filling memory.
const maxPayload = 64 << 20

// readPayload is the payload argument: "@path" reads the file, "-" reads
// stdin, anything else is the payload itself. Arguments are limited to
// 128 KiB each by the kernel, so larger payloads need a file or a pipe.
func readPayload(arg string, stdin io.Reader) ([]byte, error) {
	var r io.Reader
	name := arg
	switch {
	case arg == "-":
		r, name = stdin, "stdin"
	case strings.HasPrefix(arg, "@"):
		f, err := os.Open(arg[1:])
		if err != nil {
			return nil, &exitErr{exitUsage, fmt.Errorf("payload %s: %w", arg, err)}
		}
		defer func() { _ = f.Close() }()
		r = f
	default:
		return []byte(arg), nil
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPayload+1))
	if err != nil {
		return nil, &exitErr{exitUsage, fmt.Errorf("payload from %s: %w", name, err)}
	}
	if len(b) > maxPayload {
		return nil, &exitErr{exitUsage, fmt.Errorf("payload from %s is over %d MiB", name, maxPayload>>20)}
	}
	return b, nil
}

// portInUse reports whether addr cannot be bound because something else
// listens there. Other failures (a bad address) are left to the real bind,
// whose error says what is wrong.
func portInUse(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		_ = l.Close()
		return false
	}
	return errors.Is(err, syscall.EADDRINUSE)
}

// selfPath is how the user ran this binary, for the hints the dev banner
// prints: bin/rhizon after `make run`, rhizon when it is on the PATH.
func selfPath() string {
	p := os.Args[0]
	if !strings.ContainsRune(p, filepath.Separator) {
		return p
	}
	return filepath.Clean(p)
}
