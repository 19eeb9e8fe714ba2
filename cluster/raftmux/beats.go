package raftmux

// Coalesced Raft heartbeats.
//
// hashicorp/raft sends each group's heartbeats on their own: a node leading G
// groups sends 2G heartbeat RPCs every 100-200 ms (HeartbeatTimeout/10), each
// a write, a read, a wakeup and a msgpack decode on both sides. On an idle
// 3-node cluster of 64 shards that was about a third of every node's CPU. So
// a node sends the heartbeats of all its groups to one peer together: a
// heartbeat waits up to the linger for others to the same peer, and they
// travel as one frame on one link per node pair, answered by one frame.
// Appends, votes and snapshots keep each group's own NetworkTransport
// connections.
//
// The link is a mux connection whose header names beatGroup. Frames, both
// ways: a 4-byte big-endian length, then items. Request item: uvarint seq,
// 4-byte group, uvarint term, uvarint protocol version, then the header's ID
// and Addr, each as uvarint length + bytes.
// Response item: uvarint seq, a status byte; status 0: uvarint term, uvarint
// last log, a flags byte (1 success, 2 no retry backoff), uvarint protocol
// version, ID and Addr; status 1: the error text.
//
// A peer that closes a new link before answering anything does not take
// coalesced heartbeats (an older version during a rolling upgrade): for a
// while heartbeats to it go each group's own way again.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// beatGroup is the pseudo group id of heartbeat links; shard ids stay far
	// below it and ControlGroup is the one above.
	beatGroup uint32 = math.MaxUint32 - 1
	// DefaultHeartbeatLinger is Config.HeartbeatLinger's default: 1/50 of
	// Raft's default HeartbeatTimeout, whose heartbeats go every 100-200 ms.
	DefaultHeartbeatLinger = 20 * time.Millisecond
	// beatMaxFrame bounds a frame either way (thousands of heartbeats).
	beatMaxFrame = 1 << 20
	// beatMaxBatch sends a frame at once when this many heartbeats wait.
	beatMaxBatch = 1024
	// beatLegacyFor is how long a peer that refused a link gets heartbeats
	// the groups' own way before the next try.
	beatLegacyFor = 30 * time.Second
	// beatHurryFor is how long a group's heartbeats skip the linger after
	// Hurry.
	beatHurryFor = 100 * time.Millisecond
)

// errBeatRefused makes the heartbeat go the group's own way.
var errBeatRefused = errors.New("cluster: raft mux: peer does not take coalesced heartbeats")

// GroupTransport is one group's Raft transport: a stock NetworkTransport,
// except that heartbeats travel coalesced with the other groups' (see the
// file comment).
type GroupTransport struct {
	*raft.NetworkTransport
	m          *Mux
	group      uint32
	hb         atomic.Pointer[func(raft.RPC)]
	hurryUntil atomic.Int64 // unix nanoseconds
}

var (
	_ raft.Transport       = (*GroupTransport)(nil)
	_ raft.WithClose       = (*GroupTransport)(nil)
	_ raft.WithPreVote     = (*GroupTransport)(nil)
	_ interface{ Hurry() } = (*GroupTransport)(nil)
)

// SetHeartbeatHandler implements raft.Transport: heartbeats arriving on a
// link are handed to cb as well.
func (t *GroupTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		t.hb.Store(nil)
	} else {
		t.hb.Store(&cb)
	}
	t.NetworkTransport.SetHeartbeatHandler(cb)
}

// AppendEntries implements raft.Transport.
func (t *GroupTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if t.m.beats.linger < 0 || !coalescible(req) {
		return t.NetworkTransport.AppendEntries(id, target, req, resp)
	}
	err := t.m.beats.send(t, string(target), req, resp)
	if errors.Is(err, errBeatRefused) {
		return t.NetworkTransport.AppendEntries(id, target, req, resp)
	}
	return err
}

// Hurry makes this group's heartbeats leave without lingering for a moment,
// and sends those already waiting: a leader confirming its leadership for a
// linearizable read (raft.VerifyLeader) waits for a heartbeat round.
func (t *GroupTransport) Hurry() {
	t.hurryUntil.Store(time.Now().Add(beatHurryFor).UnixNano())
	t.m.beats.flushAll()
}

func (t *GroupTransport) hurried() bool { return time.Now().UnixNano() < t.hurryUntil.Load() }

// coalescible is NetworkTransport's test for a heartbeat (the requests its
// fast path takes), narrowed to those that name the leader in the RPC header
// as this Raft version always does: the deprecated Leader field does not
// travel on the link.
func coalescible(req *raft.AppendEntriesRequest) bool {
	return req.Term != 0 && len(req.Addr) != 0 &&
		req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

// beats is a mux's heartbeat links: one outbound link per peer address, and
// the inbound links peers opened.
type beats struct {
	m      *Mux
	linger time.Duration // negative: no coalescing

	mu     sync.Mutex
	closed bool
	links  map[string]*beatLink
	served map[net.Conn]struct{}
	wg     sync.WaitGroup

	frames  atomic.Int64 // frames sent
	carried atomic.Int64 // heartbeats in them

	refuse bool // tests: close inbound links as a node without them does
}

func newBeats(m *Mux, linger time.Duration) *beats {
	return &beats{m: m, linger: linger, links: make(map[string]*beatLink), served: make(map[net.Conn]struct{})}
}

type beatCall struct {
	t    *GroupTransport
	req  *raft.AppendEntriesRequest
	resp *raft.AppendEntriesResponse
	seq  uint64 // set when written
	done chan error
}

// send carries one heartbeat and waits for its answer.
func (b *beats) send(t *GroupTransport, addr string, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := b.m.dialFilter(t.group, addr); err != nil {
		return err
	}
	l := b.link(addr)
	if l == nil {
		return ErrClosed
	}
	c := &beatCall{t: t, req: req, resp: resp, done: make(chan error, 1)}
	if err := l.enqueue(c); err != nil {
		return err
	}
	timer := time.NewTimer(muxRPCTimeout)
	defer timer.Stop()
	select {
	case err := <-c.done:
		return err
	case <-timer.C:
	}
	// Nobody may write into resp once we return: the caller reuses it.
	if conn, ok := l.forget(c); ok {
		err := fmt.Errorf("cluster: raft mux: heartbeat to %s: no answer within %v", addr, muxRPCTimeout)
		if conn != nil {
			l.broken(conn, err)
		}
		return err
	}
	return <-c.done
}

// link returns the link to addr, starting it; nil once the mux is closed.
func (b *beats) link(addr string) *beatLink {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	if l := b.links[addr]; l != nil {
		return l
	}
	l := &beatLink{b: b, addr: addr, kick: make(chan struct{}, 1), waiting: make(map[uint64]*beatCall)}
	l.timer = time.AfterFunc(time.Hour, l.poke)
	l.timer.Stop()
	b.links[addr] = l
	b.wg.Add(1)
	go l.run()
	return l
}

// flushAll sends what waits on every link now.
func (b *beats) flushAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.links {
		l.poke()
	}
}

// close stops every link, failing what waits, and waits for their goroutines.
// The mux's context is cancelled already.
func (b *beats) close() {
	b.mu.Lock()
	b.closed = true
	var conns []net.Conn
	for c := range b.served {
		conns = append(conns, c)
	}
	for _, l := range b.links {
		l.poke()
	}
	b.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	b.wg.Wait()
}

// beatLink carries heartbeats to one peer.
type beatLink struct {
	b     *beats
	addr  string
	kick  chan struct{}
	timer *time.Timer // pokes when the linger is over

	mu          sync.Mutex
	pending     []*beatCall
	armed       bool // timer runs for pending
	dead        bool // the mux closed
	waiting     map[uint64]*beatCall
	seq         uint64
	conn        net.Conn // nil until dialed and after it broke
	answered    bool     // conn has carried an answer
	legacyUntil time.Time
}

func (l *beatLink) poke() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// enqueue queues c. It fails with errBeatRefused while the peer takes no
// coalesced heartbeats.
func (l *beatLink) enqueue(c *beatCall) error {
	l.mu.Lock()
	if l.dead {
		l.mu.Unlock()
		return ErrClosed
	}
	if time.Now().Before(l.legacyUntil) {
		l.mu.Unlock()
		return errBeatRefused
	}
	l.pending = append(l.pending, c)
	now := c.t.hurried() || len(l.pending) >= beatMaxBatch
	if !now && !l.armed {
		l.armed = true
		l.timer.Reset(l.b.linger)
	}
	l.mu.Unlock()
	if now {
		l.poke()
	}
	return nil
}

// forget takes c back if it is still queued or unanswered; conn is the link
// it waits on (nil when not written yet).
func (l *beatLink) forget(c *beatCall) (conn net.Conn, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := slices.Index(l.pending, c); i >= 0 {
		l.pending = slices.Delete(l.pending, i, i+1)
		return nil, true
	}
	if c.seq != 0 && l.waiting[c.seq] == c {
		delete(l.waiting, c.seq)
		return l.conn, true
	}
	return nil, false
}

func (l *beatLink) run() {
	defer l.b.wg.Done()
	var frame []byte
	for {
		<-l.kick
		if l.b.m.ctx.Err() != nil {
			l.shutdown()
			return
		}
		l.mu.Lock()
		calls := l.pending
		l.pending, l.armed = nil, false
		l.timer.Stop() // or it cuts the next batch's linger short
		l.mu.Unlock()
		if len(calls) == 0 {
			continue
		}
		conn, err := l.connect()
		if err != nil {
			for _, c := range calls {
				c.done <- err
			}
			continue
		}
		l.mu.Lock()
		if l.conn != conn {
			// It broke before the calls were registered on it.
			err := fmt.Errorf("cluster: raft mux: heartbeat link to %s broke", l.addr)
			if time.Now().Before(l.legacyUntil) {
				err = errBeatRefused
			}
			l.mu.Unlock()
			for _, c := range calls {
				c.done <- err
			}
			continue
		}
		frame = frame[:0]
		frame = append(frame, 0, 0, 0, 0)
		for _, c := range calls {
			l.seq++
			c.seq = l.seq
			l.waiting[c.seq] = c
			frame = appendBeatRequest(frame, c)
		}
		l.mu.Unlock()
		binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
		// Counted before the write: an answer may come before it returns.
		l.b.frames.Add(1)
		l.b.carried.Add(int64(len(calls)))
		_ = conn.SetWriteDeadline(time.Now().Add(muxRPCTimeout))
		if _, err := conn.Write(frame); err != nil {
			l.broken(conn, fmt.Errorf("cluster: raft mux: heartbeats to %s: %w", l.addr, err))
		}
	}
}

// shutdown fails everything queued or waiting once the mux is closed.
func (l *beatLink) shutdown() {
	l.timer.Stop()
	l.mu.Lock()
	l.dead = true
	calls := l.pending
	l.pending = nil
	for _, c := range l.waiting {
		calls = append(calls, c)
	}
	clear(l.waiting)
	conn := l.conn
	l.conn = nil
	l.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	for _, c := range calls {
		c.done <- ErrClosed
	}
}

// connect returns the link's connection, dialing it when there is none.
func (l *beatLink) connect() (net.Conn, error) {
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	if conn != nil {
		return conn, nil
	}
	conn, err := l.b.m.dialMux(l.b.m.ctx, l.addr, beatGroup, l.b.m.hsTimeout)
	if err != nil {
		return nil, err
	}
	l.b.mu.Lock()
	if l.b.closed {
		l.b.mu.Unlock()
		_ = conn.Close()
		return nil, ErrClosed
	}
	l.b.wg.Add(1)
	l.b.mu.Unlock()
	l.mu.Lock()
	l.conn, l.answered = conn, false
	l.mu.Unlock()
	go l.read(conn)
	return conn, nil
}

// read completes the calls that conn's answers name, until conn breaks.
func (l *beatLink) read(conn net.Conn) {
	defer l.b.wg.Done()
	r := bufio.NewReader(conn)
	var buf []byte
	for {
		var err error
		if buf, err = readBeatFrame(r, buf); err != nil {
			l.broken(conn, fmt.Errorf("cluster: raft mux: heartbeats from %s: %w", l.addr, err))
			return
		}
		l.mu.Lock()
		l.answered = true
		err = decodeBeatResponses(buf, func(seq uint64, resp *raft.AppendEntriesResponse, rerr error) {
			c := l.waiting[seq]
			if c == nil {
				return // its caller gave up
			}
			delete(l.waiting, seq)
			if rerr == nil {
				*c.resp = *resp
			}
			c.done <- rerr
		})
		l.mu.Unlock()
		if err != nil {
			l.broken(conn, fmt.Errorf("cluster: raft mux: heartbeats from %s: %w", l.addr, err))
			return
		}
	}
}

// broken closes conn and fails the calls waiting on it. A new link that broke
// before any answer marks the peer as one that takes no coalesced heartbeats.
func (l *beatLink) broken(conn net.Conn, err error) {
	_ = conn.Close()
	l.mu.Lock()
	if l.conn != conn {
		l.mu.Unlock()
		return
	}
	l.conn = nil
	if !l.answered && l.b.m.ctx.Err() == nil {
		l.legacyUntil = time.Now().Add(beatLegacyFor)
		l.b.m.warn("raft mux: peer takes no coalesced heartbeats; sending them per group", "peer", l.addr, "err", err)
		err = errBeatRefused
	}
	waiting := l.waiting
	l.waiting = make(map[uint64]*beatCall)
	l.mu.Unlock()
	for _, c := range waiting {
		c.done <- err
	}
}

// serve answers the heartbeats a peer sends on the inbound link c; it owns c.
func (b *beats) serve(c net.Conn) {
	b.mu.Lock()
	if b.closed || b.refuse {
		b.mu.Unlock()
		_ = c.Close()
		return
	}
	b.served[c] = struct{}{}
	b.wg.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.wg.Done()
		defer func() {
			b.mu.Lock()
			delete(b.served, c)
			b.mu.Unlock()
			_ = c.Close()
		}()
		r := bufio.NewReader(c)
		var in, out []byte
		for {
			var err error
			if in, err = readBeatFrame(r, in); err != nil {
				return
			}
			out = append(out[:0], 0, 0, 0, 0)
			if out, err = b.answer(in, out); err != nil {
				b.m.warn("raft mux: bad heartbeat frame", "remote", c.RemoteAddr().String(), "err", err)
				return
			}
			binary.BigEndian.PutUint32(out, uint32(len(out)-4))
			_ = c.SetWriteDeadline(time.Now().Add(muxRPCTimeout))
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}()
}

// answer hands each heartbeat of a request frame to its group's Raft and
// appends the answers to out.
func (b *beats) answer(in, out []byte) ([]byte, error) {
	for len(in) > 0 {
		var (
			seq, group uint64
			req        raft.AppendEntriesRequest
			err        error
		)
		if in, seq, group, err = decodeBeatRequest(in, &req); err != nil {
			return out, err
		}
		resp, err := b.deliver(uint32(group), &req)
		out = appendBeatResponse(out, seq, resp, err)
	}
	return out, nil
}

// deliver runs one heartbeat through its group's heartbeat handler, as
// NetworkTransport's fast path does.
func (b *beats) deliver(group uint32, req *raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
	b.m.mu.Lock()
	var t *GroupTransport
	if l := b.m.groups[group]; l != nil {
		t = l.trans
	}
	b.m.mu.Unlock()
	var fn *func(raft.RPC)
	if t != nil {
		fn = t.hb.Load()
	}
	if fn == nil {
		return nil, fmt.Errorf("group %s is not hosted here", groupLabel(group))
	}
	ch := make(chan raft.RPCResponse, 1)
	(*fn)(raft.RPC{Command: req, RespChan: ch})
	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, r.Error
		}
		resp, ok := r.Response.(*raft.AppendEntriesResponse)
		if !ok {
			return nil, fmt.Errorf("group %s answered a heartbeat with %T", groupLabel(group), r.Response)
		}
		return resp, nil
	default:
		// Raft drops heartbeats once it is shutting down.
		return nil, fmt.Errorf("group %s is shutting down", groupLabel(group))
	}
}

// readBeatFrame reads one frame's body into buf.
func readBeatFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return buf, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > beatMaxFrame {
		return buf, fmt.Errorf("frame of %d bytes exceeds %d", size, beatMaxFrame)
	}
	buf = slices.Grow(buf[:0], int(size))[:size]
	_, err := io.ReadFull(r, buf)
	return buf, err
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

func appendBeatRequest(b []byte, c *beatCall) []byte {
	b = binary.AppendUvarint(b, c.seq)
	b = binary.BigEndian.AppendUint32(b, c.t.group)
	b = binary.AppendUvarint(b, c.req.Term)
	b = binary.AppendUvarint(b, uint64(c.req.ProtocolVersion))
	b = appendBytes(b, c.req.ID)
	return appendBytes(b, c.req.Addr)
}

func appendBeatResponse(b []byte, seq uint64, resp *raft.AppendEntriesResponse, err error) []byte {
	b = binary.AppendUvarint(b, seq)
	if err != nil {
		return appendBytes(append(b, 1), []byte(err.Error()))
	}
	var flags byte
	if resp.Success {
		flags |= 1
	}
	if resp.NoRetryBackoff {
		flags |= 2
	}
	b = append(b, 0)
	b = binary.AppendUvarint(b, resp.Term)
	b = binary.AppendUvarint(b, resp.LastLog)
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(resp.ProtocolVersion))
	b = appendBytes(b, resp.ID)
	return appendBytes(b, resp.Addr)
}

var errBeatShort = errors.New("truncated heartbeat frame")

// beatDecoder reads a frame's fields, remembering the first error.
type beatDecoder struct {
	b   []byte
	err error
}

func (d *beatDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errBeatShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *beatDecoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.err = errBeatShort
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *beatDecoder) uint32() uint32 {
	if d.err != nil || len(d.b) < 4 {
		d.err = errBeatShort
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

// bytes copies: the frame buffer is reused.
func (d *beatDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errBeatShort
		return nil
	}
	if n == 0 {
		return nil
	}
	v := slices.Clone(d.b[:n])
	d.b = d.b[n:]
	return v
}

func decodeBeatRequest(in []byte, req *raft.AppendEntriesRequest) (rest []byte, seq, group uint64, err error) {
	d := beatDecoder{b: in}
	seq = d.uvarint()
	group = uint64(d.uint32())
	req.Term = d.uvarint()
	req.ProtocolVersion = raft.ProtocolVersion(d.uvarint())
	req.ID = d.bytes()
	req.Addr = d.bytes()
	return d.b, seq, group, d.err
}

func decodeBeatResponses(in []byte, each func(seq uint64, resp *raft.AppendEntriesResponse, err error)) error {
	d := beatDecoder{b: in}
	for len(d.b) > 0 && d.err == nil {
		seq := d.uvarint()
		switch d.byte() {
		case 0:
			var resp raft.AppendEntriesResponse
			resp.Term = d.uvarint()
			resp.LastLog = d.uvarint()
			flags := d.byte()
			resp.Success, resp.NoRetryBackoff = flags&1 != 0, flags&2 != 0
			resp.ProtocolVersion = raft.ProtocolVersion(d.uvarint())
			resp.ID = d.bytes()
			resp.Addr = d.bytes()
			if d.err == nil {
				each(seq, &resp, nil)
			}
		case 1:
			msg := d.bytes()
			if d.err == nil {
				each(seq, nil, fmt.Errorf("cluster: raft mux: peer: %s", msg))
			}
		default:
			if d.err == nil {
				d.err = errors.New("unknown heartbeat status")
			}
		}
	}
	return d.err
}
