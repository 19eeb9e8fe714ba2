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
	"slices"
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

// PeerProcess is one `rhizon bench-peer` child process, with a temporary
// directory of its own that holds its data and its log.
type PeerProcess struct {
	Info PeerInfo

	cmd   *exec.Cmd
	stdin io.WriteCloser
	dir   string
	done  chan struct{}
	err   error // the process's exit, once done is closed
}

// startPeerChild runs `exe bench-peer args... --dir D/data` with its
// stderr in D/peer.log, for a fresh temporary D named after name, and
// returns at once; ready then waits for its PeerInfo line. Once started,
// the child removes D itself when it exits, and it exits when its stdin
// closes: a load generator that dies, even by SIGKILL, leaves neither
// servers nor data behind.
func startPeerChild(exe, name string, args []string) (*PeerProcess, <-chan string, error) {
	dir, err := os.MkdirTemp("", "rhizon-peer-"+name+"-")
	if err != nil {
		return nil, nil, err
	}
	p := &PeerProcess{dir: dir, done: make(chan struct{})}
	fail := func(err error) (*PeerProcess, <-chan string, error) {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "peer.log"))
	if err != nil {
		return fail(err)
	}
	defer logf.Close() // the child holds its own descriptor
	args = append([]string{"bench-peer", "--stop-on-stdin-eof", "--dir", filepath.Join(dir, "data"), "--remove-on-exit", dir}, args...)
	p.cmd = exec.Command(exe, args...)
	p.cmd.Stderr = logf
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return fail(err)
	}
	if err := p.cmd.Start(); err != nil {
		return fail(fmt.Errorf("bench: start %s bench-peer: %w", exe, err))
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
	b, _ := os.ReadFile(filepath.Join(p.dir, "peer.log"))
	const keep = 4096
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return strings.TrimSpace(string(b))
}

// stop asks the child to stop (stdin closed, then SIGINT), kills it if it
// has not exited within peerStopTimeout, and removes its directory (which
// a child that started removes itself, and one that failed leaves for the
// parent to read its log).
func (p *PeerProcess) stop() error {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Signal(os.Interrupt)
	var err error
	select {
	case <-p.done:
	case <-time.After(peerStopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		err = fmt.Errorf("bench: peer process %d did not stop in %v; killed", p.cmd.Process.Pid, peerStopTimeout)
	}
	return errors.Join(err, os.RemoveAll(p.dir))
}

// Peers is a peer cluster run by `rhizon bench-peer` children: one per
// server by default, or one for all three.
type Peers struct {
	// Kind is the servers' kind (one of peer.Kinds).
	Kind string
	// URLs are the servers' client URLs.
	URLs []string
	// Dirs are the children's temporary directories, all gone after Stop.
	Dirs []string

	procs    []*PeerProcess
	pids     []int
	stopOnce sync.Once
	stopErr  error
	unhook   func() bool // unregisters the stop when ctx ends
}

// StartPeers starts the servers of the peer target named target (its
// servers' kind, see PeerServerKind) as children running exe, each server
// in a process of its own, or all three in one with oneProcess, and
// returns once every server takes writes. The children stop when ctx
// ends, when Stop is called, or when this process dies. Ports are picked
// free just before the servers bind them, so another process can take one
// in between: a bind failure is retried with new ports a few times.
func StartPeers(ctx context.Context, exe, target string, oneProcess bool) (*Peers, error) {
	kind := PeerServerKind(target)
	if kind == "" {
		return nil, fmt.Errorf("bench: unknown peer %q (known: %s)", target, strings.Join(PeerKinds, ", "))
	}
	startCtx, cancel := context.WithTimeout(ctx, DefaultPeerStartTimeout)
	defer cancel()
	var err error
	for range 3 {
		ps := &Peers{Kind: kind}
		if oneProcess {
			err = ps.startOne(startCtx, exe)
		} else {
			err = ps.startEach(startCtx, exe)
		}
		if err == nil {
			ps.unhook = context.AfterFunc(ctx, func() { _ = ps.Stop() })
			return ps, nil
		}
		if !peer.AddrInUse(err) || startCtx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("bench: %s: %w", target, err)
}

// startOne starts the whole cluster in one child.
func (ps *Peers) startOne(ctx context.Context, exe string) error {
	p, lines, err := startPeerChild(exe, ps.Kind, []string{"--kind", ps.Kind})
	if err != nil {
		return err
	}
	ps.add(p)
	return ps.await(ctx, lines)
}

// startEach starts one child per server of a fresh layout, all at once:
// each server waits for a quorum of the others before it is ready.
func (ps *Peers) startEach(ctx context.Context, exe string) error {
	layout, err := peer.NewLayout(ps.Kind)
	if err != nil {
		return err
	}
	lj, err := json.Marshal(layout)
	if err != nil {
		return err
	}
	lines := make([]<-chan string, 0, peer.Replicas)
	for i := range peer.Replicas {
		p, l, err := startPeerChild(exe, ps.Kind+"-"+peer.ServerName(ps.Kind, i),
			[]string{"--server", fmt.Sprint(i), "--layout", string(lj)})
		if err != nil {
			return errors.Join(err, ps.Stop())
		}
		ps.add(p)
		lines = append(lines, l)
	}
	return ps.await(ctx, lines...)
}

func (ps *Peers) add(p *PeerProcess) {
	ps.procs = append(ps.procs, p)
	ps.pids = append(ps.pids, p.cmd.Process.Pid)
	ps.Dirs = append(ps.Dirs, p.dir)
}

// await waits for every child's PeerInfo line and collects their URLs;
// on a failure it stops them all and returns the failed children's logs.
func (ps *Peers) await(ctx context.Context, lines ...<-chan string) error {
	errs := make([]error, len(ps.procs))
	var wg sync.WaitGroup
	for i, p := range ps.procs {
		wg.Go(func() {
			if err := p.ready(ctx, lines[i]); err != nil {
				errs[i] = fmt.Errorf("pid %d: %w\n%s", p.cmd.Process.Pid, err, p.logTail())
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return errors.Join(err, ps.Stop())
	}
	for _, p := range ps.procs {
		ps.URLs = append(ps.URLs, p.Info.URLs...)
	}
	return nil
}

// PIDs are the children's process ids, in server order.
func (ps *Peers) PIDs() []int { return slices.Clone(ps.pids) }

// Stop stops every child at once and removes their directories. It may
// be called more than once, and concurrently.
func (ps *Peers) Stop() error {
	ps.stopOnce.Do(func() {
		if ps.unhook != nil {
			ps.unhook()
		}
		errs := make([]error, len(ps.procs))
		var wg sync.WaitGroup
		for i, p := range ps.procs {
			wg.Go(func() { errs[i] = p.stop() })
		}
		wg.Wait()
		ps.stopErr = errors.Join(errs...)
	})
	return ps.stopErr
}
