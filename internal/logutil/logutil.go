// Package logutil routes the logs of libraries that use hclog
// (hashicorp/raft) into the node's slog logger.
package logutil

import (
	"context"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// HCLog returns an hclog logger named name that writes warnings and errors to
// l, keeping their level. Raft's info lines (every election, every snapshot)
// would drown a node's log, so they are dropped.
func HCLog(name string, l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: writer{l}, DisableTime: true})
}

// writer turns one hclog line ("[WARN]  name: message: k=v") into one slog
// record at the matching level.
type writer struct{ l *slog.Logger }

func (w writer) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	level := slog.LevelWarn
	switch {
	case strings.HasPrefix(msg, "[ERROR]"):
		level = slog.LevelError
		msg = strings.TrimSpace(msg[len("[ERROR]"):])
	case strings.HasPrefix(msg, "[WARN]"):
		msg = strings.TrimSpace(msg[len("[WARN]"):])
	}
	w.l.Log(context.Background(), level, msg, "component", "raft")
	return len(p), nil
}
