package replay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/cluster/raftmux"
	"github.com/rhizon/rhizon/storage"
)

// ErrBadExport is returned by Import for a file that is not a complete,
// intact export: wrong magic or version, a checksum mismatch, truncation,
// sections out of order. Nothing is left at the destination then.
var ErrBadExport = errors.New("bad export file")

const (
	maxHeaderSection = 1 << 20 // a header is 40 bytes and a Raft configuration
	maxEntryData     = 1 << 30
)

// Import rebuilds a data directory at dir (which must not exist, or be an
// empty directory) from an export read from r: state/ with each shard's
// recorded state, raft/ with its log, shards/N/snapshots with its base
// snapshot. replay.DataDir then replays it as it would the original. It
// builds the directory under a temporary name next to dir and renames it
// into place only once the whole file was read and verified. It returns
// the shards imported.
func Import(r io.Reader, dir string) ([]uint32, error) {
	dir = filepath.Clean(dir)
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("import: %s exists and is not empty: import into a new directory", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("import: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".import-")
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	shards, err := importInto(bufio.NewReaderSize(r, 256<<10), tmp)
	if err == nil {
		_ = os.Remove(dir) // an empty directory given as the destination
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("import: %w", err)
	}
	return shards, nil
}

func importInto(r io.Reader, dir string) (shards []uint32, err error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	state, err := storage.Open(filepath.Join(dir, "state"), storage.Options{Logger: quiet})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := state.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	raftDB, err := storage.OpenRaft(filepath.Join(dir, "raft"), storage.Options{Logger: quiet})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := raftDB.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()

	magic := make([]byte, len(exportMagic)+1)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic[:len(exportMagic)]) != exportMagic {
		return nil, fmt.Errorf("%w: not a rhizon export (no %q magic)", ErrBadExport, exportMagic)
	}
	if magic[len(exportMagic)] != exportVersion {
		return nil, fmt.Errorf("%w: format version %d; this binary reads version %d", ErrBadExport, magic[len(exportMagic)], exportVersion)
	}
	im := &importer{state: state, raftDB: raftDB, dir: dir}
	for n := 0; ; n++ {
		kind, shard, done, err := im.section(r, n)
		if err != nil {
			return nil, fmt.Errorf("section %d (%s, shard %d): %w", n, kindName(kind), shard, err)
		}
		if done {
			break
		}
	}
	if im.expect != kindHeader {
		return nil, fmt.Errorf("%w: shard %d ends before its %s section", ErrBadExport, im.shard, kindName(im.expect))
	}
	if _, err := r.Read(make([]byte, 1)); err != io.EOF {
		return nil, fmt.Errorf("%w: bytes after the end section", ErrBadExport)
	}
	if err := state.Sync(); err != nil {
		return nil, err
	}
	return im.shards, nil
}

type importer struct {
	state  *storage.DB
	raftDB *storage.RaftDB
	dir    string
	shards []uint32

	// The shard being read and the section kind expected next.
	shard  uint32
	expect byte
	header shardHeader
}

// section reads and applies one section; done after the end section.
func (im *importer) section(r io.Reader, n int) (kind byte, shard uint32, done bool, err error) {
	hdr := make([]byte, sectionHeaderLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, 0, false, truncated(err)
	}
	kind, shard, length := hdr[0], binary.BigEndian.Uint32(hdr[1:]), binary.BigEndian.Uint64(hdr[5:])
	crc := crc32.New(castagnoli)
	crc.Write(hdr)
	body := &countReader{r: io.TeeReader(io.LimitReader(r, int64(min(length, 1<<62))), crc)}
	applyErr := im.apply(kind, shard, length, body, n)
	// Whatever the consumer made of the payload, a checksum mismatch is the
	// clearer diagnosis, so read the rest and check it first.
	if _, err := io.Copy(io.Discard, body); err != nil {
		return kind, shard, false, truncated(err)
	}
	if body.n != length {
		return kind, shard, false, fmt.Errorf("%w: truncated: %d of %d bytes", ErrBadExport, body.n, length)
	}
	sum := make([]byte, 4)
	if _, err := io.ReadFull(r, sum); err != nil {
		return kind, shard, false, truncated(err)
	}
	if got, want := crc.Sum32(), binary.BigEndian.Uint32(sum); got != want {
		return kind, shard, false, fmt.Errorf("%w: CRC-32C mismatch (computed %08x, file says %08x): the file is corrupt", ErrBadExport, got, want)
	}
	return kind, shard, kind == kindEnd, applyErr
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the file is truncated", ErrBadExport)
	}
	return err
}

func (im *importer) apply(kind byte, shard uint32, length uint64, body io.Reader, n int) error {
	if kind == kindEnd {
		if im.expect != kindHeader && im.expect != 0 {
			return fmt.Errorf("%w: shard %d ends before its %s section", ErrBadExport, im.shard, kindName(im.expect))
		}
		b, err := readAll(body, length, 8)
		if err != nil {
			return err
		}
		if len(b) != 8 || binary.BigEndian.Uint64(b) != uint64(n) {
			return fmt.Errorf("%w: the end section counts other sections than the file holds", ErrBadExport)
		}
		if len(im.shards) == 0 {
			return fmt.Errorf("%w: no shards in the file", ErrBadExport)
		}
		return nil
	}
	if kind == kindCluster {
		if im.expect != 0 || shard != 0 {
			return fmt.Errorf("%w: a cluster section after the first shard's", ErrBadExport)
		}
		b, err := readAll(body, length, 4)
		if err != nil {
			return err
		}
		if len(b) != 4 || binary.BigEndian.Uint32(b) == 0 {
			return fmt.Errorf("%w: a cluster section of %d bytes, want a shard count > 0", ErrBadExport, len(b))
		}
		im.expect = kindHeader
		return im.cluster(binary.BigEndian.Uint32(b))
	}
	if kind == kindHeader {
		if im.expect != kindHeader && im.expect != 0 {
			return fmt.Errorf("%w: shard %d ends before its %s section", ErrBadExport, im.shard, kindName(im.expect))
		}
		b, err := readAll(body, length, maxHeaderSection)
		if err != nil {
			return err
		}
		h, err := decodeShardHeader(b)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadExport, err)
		}
		im.shard, im.header = shard, h
		im.expect = kindLog
		if h.snapshot > 0 {
			im.expect = kindBase
		}
		if err := os.MkdirAll(im.snapDir(), 0o755); err != nil {
			return err
		}
		return nil
	}
	if kind != im.expect || shard != im.shard {
		return fmt.Errorf("%w: expected the %s section of shard %d", ErrBadExport, kindName(im.expect), im.shard)
	}
	switch kind {
	case kindBase:
		im.expect = kindLog
		return im.base(body)
	case kindLog:
		im.expect = kindRecorded
		return im.log(body)
	case kindRecorded:
		im.expect = kindHeader
		im.shards = append(im.shards, shard)
		ss := im.state.Shard(shard)
		if err := ss.Restore(body); err != nil {
			return err
		}
		m, err := ss.Meta()
		if err != nil {
			return err
		}
		if m.Index != im.header.applied {
			return fmt.Errorf("%w: recorded state at index %d, header says %d", ErrBadExport, m.Index, im.header.applied)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown section kind %d", ErrBadExport, kind)
}

func (im *importer) snapDir() string { return filepath.Join(im.dir, "shards", fmt.Sprint(im.shard)) }

func (im *importer) base(body io.Reader) error {
	h := im.header
	conf, err := decodeConfiguration(h.configuration)
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(im.snapDir(), "snapshots"), 2, hclog.NewNullLogger())
	if err != nil {
		return err
	}
	// Create encodes the peers for the old protocol through a transport.
	_, tr := raft.NewInmemTransport("")
	defer func() { _ = tr.Close() }()
	sink, err := snaps.Create(raft.SnapshotVersionMax, h.snapshot, h.snapTerm, conf, h.confIndex, tr)
	if err != nil {
		return err
	}
	if _, err := io.Copy(sink, body); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// decodeConfiguration is raft.DecodeConfiguration without its panic.
func decodeConfiguration(b []byte) (conf raft.Configuration, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: undecodable Raft configuration", ErrBadExport)
		}
	}()
	return raft.DecodeConfiguration(b), nil
}

func (im *importer) log(body io.Reader) error {
	ls := im.raftDB.Shard(im.shard)
	var batch []*raft.Log
	size := 0
	want := im.header.first
	fixed := make([]byte, 8+8+1+8+4)
	for {
		if _, err := io.ReadFull(body, fixed); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return truncated(err)
		}
		l := &raft.Log{Index: binary.BigEndian.Uint64(fixed), Term: binary.BigEndian.Uint64(fixed[8:]),
			Type: raft.LogType(fixed[16])}
		if at := int64(binary.BigEndian.Uint64(fixed[17:])); at != 0 {
			l.AppendedAt = time.Unix(0, at)
		}
		var err error
		if l.Data, err = readBlob(body, binary.BigEndian.Uint32(fixed[25:])); err != nil {
			return err
		}
		var el [4]byte
		if _, err := io.ReadFull(body, el[:]); err != nil {
			return truncated(err)
		}
		if l.Extensions, err = readBlob(body, binary.BigEndian.Uint32(el[:])); err != nil {
			return err
		}
		if l.Index != want {
			return fmt.Errorf("%w: log entry %d where %d was due", ErrBadExport, l.Index, want)
		}
		want++
		batch = append(batch, l)
		size += len(l.Data) + len(l.Extensions)
		if len(batch) >= 512 || size >= 4<<20 {
			if err := ls.StoreLogs(batch); err != nil {
				return err
			}
			batch, size = batch[:0], 0
		}
	}
	if err := ls.StoreLogs(batch); err != nil {
		return err
	}
	if want != im.header.applied+1 {
		return fmt.Errorf("%w: the log ends at %d, header says %d", ErrBadExport, want-1, im.header.applied)
	}
	return nil
}

func readBlob(r io.Reader, n uint32) ([]byte, error) {
	if n > maxEntryData {
		return nil, fmt.Errorf("%w: a log entry of %d bytes", ErrBadExport, n)
	}
	if n == 0 {
		return nil, nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, truncated(err)
	}
	return b, nil
}

func readAll(r io.Reader, length uint64, limit int) ([]byte, error) {
	if length > uint64(limit) {
		return nil, fmt.Errorf("%w: a section of %d bytes where at most %d are due", ErrBadExport, length, limit)
	}
	var buf bytes.Buffer
	_, err := io.Copy(&buf, r)
	return buf.Bytes(), err
}

type countReader struct {
	r io.Reader
	n uint64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

// cluster records the cluster's shard count where a node's data directory
// holds it, the control group's first entry (the one that initialized the
// cluster: recordedShardCount reads it), so that replay finds it as it does
// in a node's directory.
func (im *importer) cluster(shards uint32) error {
	data, err := json.Marshal(map[string]any{"init": map[string]uint32{"shards": shards}})
	if err != nil {
		return err
	}
	return im.raftDB.Shard(raftmux.ControlGroup).StoreLogs([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: data}})
}
