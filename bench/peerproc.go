package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// PeerKinds are the targets that run on a peer cluster, in the order a
// comparison lists them.
var PeerKinds = []string{"etcd", "jetstream-kv", "jetstream-kv-sync"}

// IsPeer tells whether a target name is a peer kind.
func IsPeer(target string) bool {
	for _, k := range PeerKinds {
		if k == target {
			return true
		}
	}
	return false
}

// NewPeerTarget returns the target of a peer kind on the servers at cfg.URLs.
func NewPeerTarget(kind string, cfg PeerConfig) (Target, error) {
	switch kind {
	case "etcd":
		return NewEtcd(cfg)
	case "jetstream-kv", "jetstream-kv-sync":
		return NewJetStreamKV(kind, cfg)
	}
	return nil, fmt.Errorf("bench: unknown peer %q (known: %s)", kind, strings.Join(PeerKinds, ", "))
}

// PeerInfo is the line `rhizon bench-peer` prints on stdout once its
// cluster takes writes.
type PeerInfo struct {
	Kind string   `json:"kind"`
	URLs []string `json:"urls"`
	PID  int      `json:"pid"`
}

// DefaultPeerStartTimeout bounds a peer process's start: three servers'
// disk setup and first election on a loaded 2-core machine.
const DefaultPeerStartTimeout = 90 * time.Second

// PeerProcess is a peer cluster running in a child process
// (`rhizon bench-peer`), with a temporary data directory that Stop removes.
type PeerProcess struct {
	Info PeerInfo

	cmd   *exec.Cmd
	stdin io.WriteCloser
	dir   string
	done  chan struct{}
	err   error // the process's exit, once done is closed
}

// StartPeerProcess runs `exe bench-peer --kind kind` with a fresh data
// directory and returns once the process has printed its PeerInfo. The
// child also stops when its stdin closes, so a load generator that dies
// without calling Stop does not leave servers behind.
func StartPeerProcess(ctx context.Context, exe, kind string) (*PeerProcess, error) {
	if !IsPeer(kind) {
		return nil, fmt.Errorf("bench: unknown peer %q (known: %s)", kind, strings.Join(PeerKinds, ", "))
	}
	dir, err := os.MkdirTemp("", "rhizon-peer-"+kind+"-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "peer.log"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	p := &PeerProcess{dir: dir, done: make(chan struct{})}
	p.cmd = exec.Command(exe, "bench-peer", "--kind", kind, "--dir", filepath.Join(dir, "data"), "--stop-on-stdin-eof")
	p.cmd.Stderr = logf
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start %s bench-peer: %w", exe, err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout) // nothing more is expected; never block the child
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, DefaultPeerStartTimeout)
	defer cancel()
	select {
	case line, ok := <-lines:
		if ok {
			if err = json.Unmarshal([]byte(line), &p.Info); err == nil && len(p.Info.URLs) > 0 {
				return p, nil
			}
			err = fmt.Errorf("bad bench-peer line %q: %v", line, err)
		} else {
			<-p.done
			err = fmt.Errorf("bench-peer exited: %v", p.err)
		}
	case <-ctx.Done():
		err = fmt.Errorf("bench-peer not ready: %w", ctx.Err())
	}
	log := p.logTail()
	_ = p.Stop()
	return nil, fmt.Errorf("bench: %s: %w\n%s", kind, err, log)
}

// logTail returns the end of the child's log, for an error message.
func (p *PeerProcess) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "peer.log"))
	const keep = 4096
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return strings.TrimSpace(string(b))
}

// Stop asks the child to stop (stdin closed, then SIGTERM), kills it if it
// has not exited within 30 s, and removes its data directory.
func (p *PeerProcess) Stop() error {
	if p.cmd == nil {
		return nil
	}
	_ = p.stdin.Close()
	_ = p.cmd.Process.Signal(os.Interrupt)
	var err error
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		err = errors.New("bench: peer process did not stop in 30 s; killed")
	}
	p.cmd = nil
	return errors.Join(err, os.RemoveAll(p.dir))
}
