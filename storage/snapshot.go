package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/engine"
)

// Snapshot stream format, version 1:
//
//	magic "RHZNSNAP" | version byte
//	frames: uvarint key length (> 0) | uvarint value length | key | value
//	        (the key without the 4-byte shard id: keyspace tag first)
//	terminator: uvarint 0
//	count: uint64 big-endian, the number of frames
//	crc: uint32 big-endian, CRC-32C of every byte before it
//
// Keys are in Badger's order, so two snapshots of equal state are equal bytes.
const (
	snapshotMagic   = "RHZNSNAP"
	snapshotVersion = 1

	maxSnapshotKey   = 65000   // Badger's key size limit
	maxSnapshotValue = 1 << 30 // far above any value the engine writes
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadSnapshot is returned by Restore for a stream that is not a complete,
// intact snapshot of this format: wrong magic or version, truncated, unknown
// keyspace, wrong count or checksum. The shard's state is then untouched.
var ErrBadSnapshot = errors.New("storage: bad snapshot")

// errSnapshotReleased is returned by WriteTo after Release.
var errSnapshotReleased = errors.New("storage: snapshot already released")

// Snapshot is a point-in-time view of one shard, pinned by a Badger read
// transaction. Raft's FSM.Snapshot takes it on the apply goroutine and
// FSMSnapshot.Persist streams it concurrently with later Applies, which it
// never sees (the go-libp2p-raft#69 bug is reading live state instead).
type Snapshot struct {
	mu   sync.Mutex
	s    *ShardStore
	txn  *badger.Txn
	meta engine.Meta
}

// Snapshot pins the shard's current state. Call DB.Sync before the snapshot
// lets Raft truncate its log (the shard does, before it persists one), and
// Release when done.
func (s *ShardStore) Snapshot() (*Snapshot, error) {
	txn := s.db().NewTransaction(false)
	restoring, err := has(txn, tagPrefix(s.id, tagRestoring))
	if err == nil && restoring {
		err = ErrRestoreIncomplete
	}
	var m engine.Meta
	if err == nil {
		var item *badger.Item
		item, err = txn.Get(metaKey(s.id))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			err = nil
		case err == nil:
			err = item.Value(func(v []byte) error {
				var derr error
				m, derr = decodeMeta(v)
				return derr
			})
		}
	}
	if err != nil {
		txn.Discard()
		return nil, fmt.Errorf("storage: shard %d: snapshot: %w", s.id, err)
	}
	return &Snapshot{s: s, txn: txn, meta: m}, nil
}

// Meta is the applied position and state hash the snapshot holds.
func (sn *Snapshot) Meta() engine.Meta { return sn.meta }

// WriteTo streams the snapshot in the format above and returns the bytes
// written. It may be called more than once before Release.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.txn == nil {
		return 0, errSnapshotReleased
	}
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 256<<10)
	crc := crc32.New(castagnoli)
	out := io.MultiWriter(bw, crc)

	hdr := append([]byte(snapshotMagic), snapshotVersion)
	if _, err := out.Write(hdr); err != nil {
		return cw.n, err
	}
	var count uint64
	var lens []byte
	frame := func(key, v []byte) error {
		lens = binary.AppendUvarint(lens[:0], uint64(len(key)))
		lens = binary.AppendUvarint(lens, uint64(len(v)))
		for _, b := range [][]byte{lens, key, v} {
			if _, err := out.Write(b); err != nil {
				return err
			}
		}
		count++
		return nil
	}
	// Records go out as every build reads them: full outbox rows
	// (outboxEventRef), results and history records without references
	// (resultref.go). Results with references wait in chunks, whose events
	// are read in key order (resultChunk).
	chunk := resultChunk{s: sn.s, txn: sn.txn}
	flush := func() error {
		if err := chunk.expand(); err != nil {
			return err
		}
		for i := range chunk.keys {
			if err := frame(chunk.keys[i], chunk.vals[i]); err != nil {
				return err
			}
		}
		chunk.reset()
		return nil
	}
	iopt := badger.DefaultIteratorOptions
	iopt.Prefix = shardPrefix(sn.s.id)
	it := sn.txn.NewIterator(iopt)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		key := item.Key()[shardPrefixLen:]
		if len(key) == 0 || !dataTag(key[0]) {
			continue
		}
		if key[0] != tagResult && len(chunk.keys) > 0 {
			if err := flush(); err != nil {
				return cw.n, err
			}
		}
		err := item.Value(func(v []byte) error {
			var err error
			switch key[0] {
			case tagOutbox:
				last, ok := parsePos(key[1:])
				if !ok {
					return fmt.Errorf("%w: outbox %x", errCorruptKey, key)
				}
				v, err = sn.s.expandOutboxValue(sn.txn, last, v)
			case tagResult:
				if len(chunk.keys) > 0 || bytes.HasPrefix(v, resultRefMark) {
					chunk.add(key, v) // in order behind the ones waiting
					return nil
				}
			case tagHistory:
				v, err = plainHistoryValue(v)
			}
			if err != nil {
				return err
			}
			return frame(key, v)
		})
		if err != nil {
			return cw.n, err
		}
		if len(chunk.keys) == resultChunkLen {
			if err := flush(); err != nil {
				return cw.n, err
			}
		}
	}
	if err := flush(); err != nil {
		return cw.n, err
	}
	trailer := binary.BigEndian.AppendUint64([]byte{0}, count)
	if _, err := out.Write(trailer); err != nil {
		return cw.n, err
	}
	if _, err := bw.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32())); err != nil {
		return cw.n, err
	}
	err := bw.Flush()
	return cw.n, err
}

// Release discards the read transaction. It is idempotent.
func (sn *Snapshot) Release() {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.txn != nil {
		sn.txn.Discard()
		sn.txn = nil
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore replaces the shard's state with the snapshot read from r.
//
// It first copies the whole stream to a staging file (in Options.TempDir)
// while verifying it, so a bad or truncated stream returns ErrBadSnapshot
// with the old state untouched; verifying needs the trailing checksum, and a
// file (unlike memory) holds a snapshot of any size. Only then does it mark
// the shard as restoring (synced), delete the shard's keys, load the staged
// ones and sync, and clear the mark. Deleting and loading take many
// transactions; if they fail or the process dies, the mark stays and Meta
// returns ErrRestoreIncomplete until a later Restore succeeds. It deletes key
// by key rather than with Badger's DropPrefix, which blocks writes to the
// whole database: every other shard on the node would fail its commits.
func (s *ShardStore) Restore(r io.Reader) error {
	f, err := os.CreateTemp(s.d.tempDir(), restoreFilePattern)
	if err != nil {
		return fmt.Errorf("storage: shard %d: restore: %w", s.id, err)
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	bw := bufio.NewWriterSize(f, 256<<10)
	if err := stageSnapshot(r, bw); err != nil {
		return fmt.Errorf("storage: shard %d: restore: %w", s.id, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("storage: shard %d: restore: stage: %w", s.id, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("storage: shard %d: restore: %w", s.id, err)
	}
	defer s.due.reset()
	s.results.reset()
	defer s.results.reset()
	if err := s.replace(bufio.NewReaderSize(f, 256<<10)); err != nil {
		return fmt.Errorf("storage: shard %d: restore (state incomplete until a restore succeeds): %w", s.id, err)
	}
	return nil
}

// replace swaps the shard's keys for the staged frames under the restoring mark.
func (s *ShardStore) replace(staged *bufio.Reader) error {
	k := s.d.kv
	mark := tagPrefix(s.id, tagRestoring)
	if err := k.db.Update(func(txn *badger.Txn) error { return txn.Set(mark, nil) }); err != nil {
		return err
	}
	if err := k.sync(); err != nil {
		return err
	}
	if err := k.deleteKeys(shardPrefix(s.id), nil, func(key []byte) bool { return bytes.Equal(key, mark) }); err != nil {
		return fmt.Errorf("delete old state: %w", err)
	}
	const chunkBytes = 1 << 20
	var ops []op
	size := 0
	for {
		key, val, err := readFrame(staged)
		if err != nil {
			return fmt.Errorf("read staged snapshot: %w", err)
		}
		if key == nil {
			break
		}
		full := append(shardPrefix(s.id), key...)
		ops = append(ops, op{key: full, val: val})
		size += len(full) + len(val)
		if size >= chunkBytes || len(ops) >= 1024 {
			if err := k.writeChunked(ops); err != nil {
				return fmt.Errorf("load state: %w", err)
			}
			ops, size = ops[:0], 0
		}
	}
	if err := k.writeChunked(ops); err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	if err := k.sync(); err != nil {
		return err
	}
	if err := k.db.Update(func(txn *badger.Txn) error { return txn.Delete(mark) }); err != nil {
		return err
	}
	return k.sync()
}

// readFrame reads one staged frame; a nil key means the end.
func readFrame(r *bufio.Reader) (key, val []byte, err error) {
	kl, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, nil, err
	}
	if kl == 0 {
		return nil, nil, nil
	}
	vl, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, nil, err
	}
	if kl > maxSnapshotKey || vl > maxSnapshotValue {
		return nil, nil, fmt.Errorf("%w: frame of %d+%d bytes", ErrBadSnapshot, kl, vl)
	}
	buf := make([]byte, kl+vl)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, nil, err
	}
	return buf[:kl:kl], buf[kl:], nil
}

// hashReader feeds every byte read through it into h.
type hashReader struct {
	r *bufio.Reader
	h hash.Hash32
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

func (h *hashReader) ReadByte() (byte, error) {
	b, err := h.r.ReadByte()
	if err == nil {
		h.h.Write([]byte{b})
	}
	return b, err
}

// stageSnapshot verifies the stream from r and copies its frames, followed by
// a terminator, to w. Every failure wraps ErrBadSnapshot except errors of w.
func stageSnapshot(r io.Reader, w io.Writer) error {
	br := bufio.NewReaderSize(r, 256<<10)
	hr := &hashReader{r: br, h: crc32.New(castagnoli)}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
	}
	short := func(what string, err error) error {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return bad("truncated in %s", what)
		}
		return fmt.Errorf("read snapshot %s: %w", what, err)
	}

	hdr := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(hr, hdr); err != nil {
		return short("header", err)
	}
	if string(hdr[:len(snapshotMagic)]) != snapshotMagic {
		return bad("magic %q", hdr[:len(snapshotMagic)])
	}
	if v := hdr[len(snapshotMagic)]; v != snapshotVersion {
		return bad("format version %d; this build reads %d", v, snapshotVersion)
	}
	var count uint64
	var lens []byte
	key := make([]byte, 0, 256)
	for {
		kl, err := binary.ReadUvarint(hr)
		if err != nil {
			return short("frame", err)
		}
		if kl == 0 {
			break
		}
		vl, err := binary.ReadUvarint(hr)
		if err != nil {
			return short("frame", err)
		}
		if kl > maxSnapshotKey || vl > maxSnapshotValue {
			return bad("frame %d of %d+%d bytes", count, kl, vl)
		}
		if kl > uint64(cap(key)) {
			key = make([]byte, kl)
		}
		key = key[:kl]
		if _, err := io.ReadFull(hr, key); err != nil {
			return short("frame", err)
		}
		if !dataTag(key[0]) {
			return bad("frame %d has unknown keyspace 0x%02x", count, key[0])
		}
		lens = binary.AppendUvarint(lens[:0], kl)
		lens = binary.AppendUvarint(lens, vl)
		if _, err := w.Write(lens); err != nil {
			return err
		}
		if _, err := w.Write(key); err != nil {
			return err
		}
		if n, err := io.CopyN(w, hr, int64(vl)); err != nil {
			if n < int64(vl) && (err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)) {
				return bad("truncated in frame %d", count)
			}
			return err
		}
		count++
	}
	var tail [12]byte
	if _, err := io.ReadFull(hr, tail[:8]); err != nil {
		return short("count", err)
	}
	sum := hr.h.Sum32()
	if _, err := io.ReadFull(br, tail[8:]); err != nil {
		return short("checksum", err)
	}
	if n := binary.BigEndian.Uint64(tail[:8]); n != count {
		return bad("holds %d frames, its trailer says %d", count, n)
	}
	if c := binary.BigEndian.Uint32(tail[8:]); c != sum {
		return bad("checksum %08x, computed %08x", c, sum)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			return bad("data after the checksum")
		}
		return fmt.Errorf("read snapshot end: %w", err)
	}
	_, err := w.Write([]byte{0})
	return err
}
