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
	"sync"
	"time"

	"github.com/rhizon/rhizon/bench/peer"
)

// PeerInfo is the line `rhizon bench-peer` prints on stdout once its
// server (or cluster) takes writes.
type PeerInfo struct {
	Kind string   `json:"kind"`
	URLs []string `json:"urls"`
	PID  int      `json:"pid"`
}

// DefaultPeerStartTimeout bounds a peer's start: three servers' disk
// setup and first election on a loaded 2-core machine.
const DefaultPeerStartTimeout = 90 * time.Second

// peerStopTimeout bounds a peer process's graceful stop before it is killed.
const peerStopTimeout = 30 * time.Second

// PeerProcess is one `rhizon bench-peer` child process.
type PeerProcess struct {
	Info PeerInfo

	cmd   *exec.Cmd
	stdin io.WriteCloser
	log   string // the child's stderr
	done  chan struct{}
	err   error // the process's exit, once done is closed
}

// startPeerChild runs `exe bench-peer args...` with its stderr in logPath
// and returns at once; ready then waits for its PeerInfo line. The child
// also stops when its stdin closes, so a load generator that dies without
// calling stop does not leave servers behind.
func startPeerChild(exe, logPath string, args []string) (*PeerProcess, <-chan string, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	p := &PeerProcess{log: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(exe, append([]string{"bench-peer", "--stop-on-stdin-eof"}, args...)...)
	p.cmd.Stderr = logf
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("bench: start %s bench-peer: %w", exe, err)
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
	return p, lines, nil
}

// ready waits for the child's PeerInfo line.
func (p *PeerProcess) ready(ctx context.Context, lines <-chan string) error {
	select {
	case line, ok := <-lines:
		if !ok {
			<-p.done
			return fmt.Errorf("bench-peer exited: %v", p.err)
		}
		if err := json.Unmarshal([]byte(line), &p.Info); err != nil || len(p.Info.URLs) == 0 {
			return fmt.Errorf("bad bench-peer line %q: %v", line, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bench-peer not ready: %w", ctx.Err())
	}
}

// logTail returns the end of the child's log, for an error message.
func (p *PeerProcess) logTail() string {
	b, _ := os.ReadFile(p.log)
	const keep = 4096
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return strings.TrimSpace(string(b))
}

// stop asks the child to stop (stdin closed, then SIGINT) and kills it if
// it has not exited within peerStopTimeout.
func (p *PeerProcess) stop() error {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
		return nil
	case <-time.After(peerStopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("bench: peer process %d did not stop in %v; killed", p.cmd.Process.Pid, peerStopTimeout)
	}
}

// Peers is a peer cluster run by `rhizon bench-peer` children: one per
// server by default, or one for all three. Its temporary directory, which
// holds the servers' data and the children's logs, goes with Stop.
type Peers struct {
	// Kind is the servers' kind (one of peer.Kinds).
	Kind string
	// URLs are the servers' client URLs.
	URLs []string
	// Procs are the child processes.
	Procs []*PeerProcess
	// Dir is the temporary directory.
	Dir string
}

// StartPeers starts the servers of the peer target named target (its
// servers' kind, see PeerServerKind) as children running exe, each server
// in a process of its own, or all three in one with oneProcess, and
// returns once every server takes writes. Ports are picked free just
// before the servers bind them, so another process can take one in
// between: a bind failure is retried with new ports a few times.
func StartPeers(ctx context.Context, exe, target string, oneProcess bool) (*Peers, error) {
	kind := PeerServerKind(target)
	if kind == "" {
		return nil, fmt.Errorf("bench: unknown peer %q (known: %s)", target, strings.Join(PeerKinds, ", "))
	}
	dir, err := os.MkdirTemp("", "rhizon-peer-"+kind+"-")
	if err != nil {
		return nil, err
	}
	ps := &Peers{Kind: kind, Dir: dir}
	ctx, cancel := context.WithTimeout(ctx, DefaultPeerStartTimeout)
	defer cancel()
	for attempt := range 3 {
		// A fresh directory per attempt: a half-started cluster leaves
		// state that the next one must not find.
		try := filepath.Join(dir, fmt.Sprintf("try%d", attempt))
		if err = os.Mkdir(try, 0o755); err != nil {
			break
		}
		if oneProcess {
			err = ps.startOne(ctx, exe, try)
		} else {
			err = ps.startEach(ctx, exe, try)
		}
		if err == nil {
			return ps, nil
		}
		if !peer.AddrInUse(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(fmt.Errorf("bench: %s: %w", target, err), os.RemoveAll(dir))
}

// startOne starts the whole cluster in one child.
func (ps *Peers) startOne(ctx context.Context, exe, dir string) error {
	p, lines, err := startPeerChild(exe, filepath.Join(dir, "peer.log"),
		[]string{"--kind", ps.Kind, "--dir", filepath.Join(dir, "data"), "--remove-dir"})
	if err != nil {
		return err
	}
	ps.Procs = []*PeerProcess{p}
	return ps.await(ctx, lines)
}

// startEach starts one child per server of a fresh layout, all at once:
// each server waits for a quorum of the others before it is ready.
func (ps *Peers) startEach(ctx context.Context, exe, dir string) error {
	layout, err := peer.NewLayout(ps.Kind)
	if err != nil {
		return err
	}
	lj, err := json.Marshal(layout)
	if err != nil {
		return err
	}
	ps.Procs = make([]*PeerProcess, 0, peer.Replicas)
	lines := make([]<-chan string, 0, peer.Replicas)
	for i := range peer.Replicas {
		name := peer.ServerName(ps.Kind, i)
		p, l, err := startPeerChild(exe, filepath.Join(dir, name+".log"), []string{
			"--server", fmt.Sprint(i), "--layout", string(lj), "--dir", filepath.Join(dir, name), "--remove-dir",
		})
		if err != nil {
			_ = ps.stopAll()
			return err
		}
		ps.Procs, lines = append(ps.Procs, p), append(lines, l)
	}
	return ps.await(ctx, lines...)
}

// await waits for every child's PeerInfo line and collects their URLs;
// on a failure it stops them all and returns the failed children's logs.
func (ps *Peers) await(ctx context.Context, lines ...<-chan string) error {
	errs := make([]error, len(ps.Procs))
	var wg sync.WaitGroup
	for i, p := range ps.Procs {
		wg.Go(func() {
			if err := p.ready(ctx, lines[i]); err != nil {
				errs[i] = fmt.Errorf("pid %d: %w\n%s", p.cmd.Process.Pid, err, p.logTail())
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return errors.Join(err, ps.stopAll())
	}
	ps.URLs = nil
	for _, p := range ps.Procs {
		ps.URLs = append(ps.URLs, p.Info.URLs...)
	}
	return nil
}

// PIDs are the children's process ids.
func (ps *Peers) PIDs() []int {
	var pids []int
	for _, p := range ps.Procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// stopAll stops every child at once.
func (ps *Peers) stopAll() error {
	errs := make([]error, len(ps.Procs))
	var wg sync.WaitGroup
	for i, p := range ps.Procs {
		wg.Go(func() { errs[i] = p.stop() })
	}
	wg.Wait()
	ps.Procs = nil
	return errors.Join(errs...)
}

// Stop stops every child and removes the temporary directory.
func (ps *Peers) Stop() error {
	if ps.Dir == "" {
		return nil
	}
	err := ps.stopAll()
	err = errors.Join(err, os.RemoveAll(ps.Dir))
	ps.Dir = ""
	return err
}
