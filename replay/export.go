package replay

// Export file format, version 1 (documented in the README, "Replay and
// verify"). All integers are big-endian.
//
//	magic "RHZNEXPT" | version byte (1)
//	sections, each:
//	    kind byte | shard uint32 | length uint64 | payload (length bytes)
//	    | crc uint32: CRC-32C (Castagnoli) of kind, shard, length and payload
//	end section: kind 0 | shard 0 | length 8 | payload: uint64 number of
//	    sections before it | crc; nothing may follow it.
//
// Per shard, in this order:
//
//	kind 1 header: applied uint64 | first uint64 (first log index in the
//	    file) | snapshot uint64 (index of the base snapshot, 0 = none) |
//	    snapshot term uint64 | configuration index uint64 | configuration
//	    (raft.EncodeConfiguration, the rest of the payload)
//	kind 2 base (only when snapshot > 0): the Raft snapshot's content, the
//	    storage snapshot stream (storage/snapshot.go)
//	kind 3 log: the Raft entries first..applied, each: index uint64 | term
//	    uint64 | type byte | appended-at int64 (Unix ns, 0 = unset) |
//	    data length uint32 | data | extensions length uint32 | extensions
//	kind 4 recorded: the recorded state at applied, a storage snapshot stream
//
// Before the shards, once, when the node's control group names it:
//
//	kind 5 cluster (shard 0): the cluster's shard count, uint32. The engine
//	    needs it to place violations' audit streams; without it a replay of
//	    a shard that recorded a violation differs.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/storage"
)

const (
	exportMagic   = "RHZNEXPT"
	exportVersion = 1

	kindEnd      byte = 0
	kindHeader   byte = 1
	kindBase     byte = 2
	kindLog      byte = 3
	kindRecorded byte = 4
	kindCluster  byte = 5

	sectionHeaderLen = 1 + 4 + 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func kindName(k byte) string {
	switch k {
	case kindEnd:
		return "end"
	case kindHeader:
		return "header"
	case kindBase:
		return "base snapshot"
	case kindLog:
		return "log"
	case kindRecorded:
		return "recorded state"
	case kindCluster:
		return "cluster"
	}
	return fmt.Sprintf("unknown kind %d", k)
}

// shardHeader is the payload of a kind 1 section.
type shardHeader struct {
	applied, first     uint64
	snapshot, snapTerm uint64
	confIndex          uint64
	configuration      []byte
}

func (h *shardHeader) encode() []byte {
	b := make([]byte, 0, 40+len(h.configuration))
	for _, v := range []uint64{h.applied, h.first, h.snapshot, h.snapTerm, h.confIndex} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return append(b, h.configuration...)
}

func decodeShardHeader(b []byte) (shardHeader, error) {
	if len(b) < 40 {
		return shardHeader{}, fmt.Errorf("header of %d bytes, want at least 40", len(b))
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(b[8*i:]) }
	h := shardHeader{applied: u(0), first: u(1), snapshot: u(2), snapTerm: u(3), confIndex: u(4),
		configuration: b[40:]}
	if h.applied == 0 || h.first == 0 || h.first > h.applied+1 || (h.first > 1 && h.snapshot+1 < h.first) {
		return h, fmt.Errorf("header: applied %d, first log index %d, snapshot %d do not fit together",
			h.applied, h.first, h.snapshot)
	}
	return h, nil
}

// Export writes the shards of the stopped node whose data directory is dir
// to w in the export format: for each shard its base snapshot (where the
// log was compacted), its Raft log up to the applied index, and its
// recorded state. With no shards given it writes every shard that applied
// something. spool is a directory for temporary files (each section is
// written there first to learn its length); "" is the system's. It returns
// the shards written.
func Export(dir string, shards []uint32, w io.Writer, spool string) ([]uint32, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	state, err := storage.Open(filepath.Join(dir, "state"), storage.Options{Logger: quiet})
	if err != nil {
		return nil, fmt.Errorf("export: open state (is the node stopped?): %w", err)
	}
	defer func() { _ = state.Close() }()
	raftDB, err := storage.OpenRaft(filepath.Join(dir, "raft"), storage.Options{Logger: quiet})
	if err != nil {
		return nil, fmt.Errorf("export: open raft log: %w", err)
	}
	defer func() { _ = raftDB.Close() }()
	all := len(shards) == 0
	if all {
		if shards, err = ShardDirs(dir); err != nil {
			return nil, err
		}
	}
	ew := &exportWriter{w: w, spool: spool}
	if err := ew.raw(append([]byte(exportMagic), exportVersion)); err != nil {
		return nil, err
	}
	count, err := recordedShardCount(dir, raftDB)
	if err != nil {
		return nil, fmt.Errorf("export: shard count: %w", err)
	}
	if count > 0 {
		if err := ew.section(kindCluster, 0, func(w io.Writer) error {
			_, err := w.Write(binary.BigEndian.AppendUint32(nil, count))
			return err
		}); err != nil {
			return nil, err
		}
	}
	var written []uint32
	for _, id := range shards {
		err := exportShard(ew, id, state.Shard(id), raftDB.Shard(id), filepath.Join(dir, "shards", fmt.Sprint(id)))
		if errors.Is(err, ErrNoData) && all {
			continue // a shard directory whose replica never applied anything
		}
		if err != nil {
			return nil, fmt.Errorf("export: shard %d: %w", id, err)
		}
		written = append(written, id)
	}
	if len(written) == 0 {
		return nil, fmt.Errorf("export: %w", ErrNoData)
	}
	return written, ew.section(kindEnd, 0, func(w io.Writer) error {
		_, err := w.Write(binary.BigEndian.AppendUint64(nil, uint64(ew.sections)))
		return err
	})
}

func exportShard(ew *exportWriter, id uint32, rec *storage.ShardStore, log *storage.LogStore, snapDir string) error {
	sn, err := rec.Snapshot()
	if err != nil {
		return err
	}
	defer sn.Release()
	h := shardHeader{applied: sn.Meta().Index}
	if h.applied == 0 {
		return ErrNoData
	}
	if h.first, err = log.FirstIndex(); err != nil {
		return err
	}
	if h.first == 0 { // an empty log: everything is in the snapshot
		h.first = h.applied + 1
	}
	var base *raft.SnapshotMeta
	var snaps *raft.FileSnapshotStore
	if h.first > 1 {
		if snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(snapDir, "snapshots"), 2,
			hclog.NewNullLogger()); err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
		if base, err = baseSnapshot(snaps, h.first); err != nil {
			return err
		}
		h.snapshot, h.snapTerm, h.confIndex = base.Index, base.Term, base.ConfigurationIndex
		h.configuration = raft.EncodeConfiguration(base.Configuration)
	}
	if err := ew.section(kindHeader, id, func(w io.Writer) error {
		_, err := w.Write(h.encode())
		return err
	}); err != nil {
		return err
	}
	if base != nil {
		if err := ew.section(kindBase, id, func(w io.Writer) error {
			_, rc, err := snaps.Open(base.ID)
			if err != nil {
				return fmt.Errorf("open snapshot %s: %w", base.ID, err)
			}
			defer rc.Close()
			_, err = io.Copy(w, rc)
			return err
		}); err != nil {
			return err
		}
	}
	if err := ew.section(kindLog, id, func(w io.Writer) error {
		var b []byte
		for idx := h.first; idx <= h.applied; idx++ {
			var l raft.Log
			if err := log.GetLog(idx, &l); err != nil {
				return fmt.Errorf("log entry %d: %w", idx, err)
			}
			b = appendEntry(b[:0], &l)
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return ew.section(kindRecorded, id, func(w io.Writer) error {
		_, err := sn.WriteTo(w)
		return err
	})
}

// baseSnapshot is the newest snapshot that covers the log's gap, as
// restoreLatest chooses it.
func baseSnapshot(snaps *raft.FileSnapshotStore, first uint64) (*raft.SnapshotMeta, error) {
	list, err := snaps.List()
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	for _, m := range list { // newest first
		if m.Index+1 >= first {
			return m, nil
		}
	}
	return nil, fmt.Errorf("the log starts at %d and no snapshot reaches it", first)
}

func appendEntry(b []byte, l *raft.Log) []byte {
	b = binary.BigEndian.AppendUint64(b, l.Index)
	b = binary.BigEndian.AppendUint64(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.Extensions)))
	return append(b, l.Extensions...)
}

// exportWriter writes sections; each payload is spooled to a temporary
// file first, since its length precedes it.
type exportWriter struct {
	w        io.Writer
	spool    string
	sections int
}

func (e *exportWriter) raw(b []byte) error {
	_, err := e.w.Write(b)
	return err
}

func (e *exportWriter) section(kind byte, shard uint32, payload func(io.Writer) error) error {
	f, err := os.CreateTemp(e.spool, "rhizon-export-")
	if err != nil {
		return err
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	if err := payload(f); err != nil {
		return fmt.Errorf("%s: %w", kindName(kind), err)
	}
	n, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	hdr := []byte{kind}
	hdr = binary.BigEndian.AppendUint32(hdr, shard)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	crc := crc32.New(castagnoli)
	out := io.MultiWriter(e.w, crc)
	if _, err := out.Write(hdr); err != nil {
		return err
	}
	if c, err := io.Copy(out, f); err != nil {
		return err
	} else if c != n {
		return fmt.Errorf("%s: spooled %d bytes, read back %d", kindName(kind), n, c)
	}
	e.sections++
	return e.raw(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
}

// ShardDirs lists the shards that have a directory under dir/shards.
func ShardDirs(dir string) ([]uint32, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "shards"))
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for _, e := range ents {
		var n uint32
		if _, err := fmt.Sscanf(e.Name(), "%d", &n); err == nil && e.IsDir() && fmt.Sprint(n) == e.Name() {
			ids = append(ids, n)
		}
	}
	slices.Sort(ids)
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s: no shards", dir)
	}
	return ids, nil
}
