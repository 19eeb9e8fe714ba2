package replay_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/replay"
)

// exportOf records a shard into a new directory and exports it.
func exportOf(t *testing.T, compact bool) (dir string, file []byte) {
	t.Helper()
	dir = t.TempDir()
	record(t, dir, compact)
	var buf bytes.Buffer
	if _, err := replay.Export(dir, nil, &buf, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	return dir, buf.Bytes()
}

func doublingRegistry(t *testing.T) *actor.Registry {
	t.Helper()
	var bs []actor.Behavior
	for _, b := range builtin.All() {
		if b.Type() == "counter" {
			b = doubling{b}
		}
		bs = append(bs, b)
	}
	reg, err := actor.NewRegistry(bs...)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// An export imported into a new directory replays exactly as the original
// directory does, with the same binary (identical, same hash, same counts)
// and with a changed Decide (the same first divergence), from the empty
// store and from a snapshot behind a compacted log.
func TestExport_ImportReplaysAsTheOriginal(t *testing.T) {
	for _, compact := range []bool{false, true} {
		t.Run(fmt.Sprint("compacted=", compact), func(t *testing.T) {
			orig, file := exportOf(t, compact)
			imported := filepath.Join(t.TempDir(), "imported")
			shards, err := replay.Import(bytes.NewReader(file), imported)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(shards, []uint32{shardID}) {
				t.Fatalf("imported shards %v, want [%d]", shards, shardID)
			}
			for _, reg := range []*actor.Registry{builtin.Registry(), doublingRegistry(t)} {
				want, err := replay.DataDir(orig, replay.Options{Shard: shardID, Registry: reg})
				if err != nil {
					t.Fatal(err)
				}
				got, err := replay.DataDir(imported, replay.Options{Shard: shardID, Registry: reg})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("replay of the import:\n%+v %+v\nof the original:\n%+v %+v", got, got.Divergence, want, want.Divergence)
				}
				if compact && want.Snapshot == 0 {
					t.Fatal("the compacted recording replayed without its snapshot")
				}
			}
			// The identical case is identical, the planted change is named.
			rep, _ := replay.DataDir(imported, replay.Options{Shard: shardID, Registry: builtin.Registry()})
			if !rep.Identical || strings.Trim(rep.ReplayedHash, "0") == "" {
				t.Fatalf("replay of the import with the same code: %+v", rep)
			}
			if compact {
				return // the changed command is inside the snapshot: nothing to name
			}
			rep, _ = replay.DataDir(imported, replay.Options{Shard: shardID, Registry: doublingRegistry(t)})
			if rep.Identical || rep.Divergence == nil || rep.Divergence.CommandID != "id-k2" {
				t.Fatalf("replay of the import with a changed Decide: %+v %+v", rep, rep.Divergence)
			}
		})
	}
}

// A corrupt byte anywhere, a truncated file or a file that is no export
// is refused with an error that says so, and leaves nothing at the
// destination nor beside it.
func TestExport_ImportRefusesABadFile(t *testing.T) {
	_, file := exportOf(t, true)
	cases := map[string][]byte{}
	for _, at := range []int{20, len(file) / 3, len(file) / 2, len(file) - 30, len(file) - 2} {
		bad := bytes.Clone(file)
		bad[at] ^= 0x40
		cases[fmt.Sprint("byte ", at, " of ", len(file))] = bad
	}
	cases["truncated"] = file[:len(file)-100]
	cases["truncated in the end section"] = file[:len(file)-3]
	cases["trailing bytes"] = append(bytes.Clone(file), 0)
	cases["not an export"] = []byte("hello, world")
	cases["another version"] = append([]byte("RHZNEXPT\x09"), file[9:]...)
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "imported")
			_, err := replay.Import(bytes.NewReader(bad), dest)
			if !errors.Is(err, replay.ErrBadExport) {
				t.Fatalf("import of a bad file: %v, want %v", err, replay.ErrBadExport)
			}
			switch {
			case strings.HasPrefix(name, "byte "):
				if !strings.Contains(err.Error(), "CRC-32C mismatch") {
					t.Fatalf("a corrupt byte: %v", err)
				}
			case strings.HasPrefix(name, "truncated"):
				if !strings.Contains(err.Error(), "truncated") {
					t.Fatalf("a truncated file: %v", err)
				}
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Fatalf("after a refused import the parent holds %v", ents)
			}
		})
	}
}

func TestExport_ImportRefusesANonEmptyDirectory(t *testing.T) {
	_, file := exportOf(t, false)
	dest := t.TempDir()
	if err := os.WriteFile(filepath.Join(dest, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Import(bytes.NewReader(file), dest); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("import into a non-empty directory: %v", err)
	}
	// An empty directory is a fine destination.
	dest = t.TempDir()
	if _, err := replay.Import(bytes.NewReader(file), dest); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.DataDir(dest, replay.Options{Shard: shardID, Registry: builtin.Registry()}); err != nil {
		t.Fatal(err)
	}
}

// sections splits an export into its sections (header, payload and CRC
// each), after the 9 bytes of magic and version.
func sections(t *testing.T, file []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for b := file[9:]; len(b) > 0; {
		n := 13 + int(binary.BigEndian.Uint64(b[5:13])) + 4
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// reseal rebuilds a file from sections, with a new end section and every
// CRC recomputed: a well-formed file whose content is wrong.
func reseal(secs [][]byte) []byte {
	file := []byte("RHZNEXPT\x01")
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	end := binary.BigEndian.AppendUint64([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8}, uint64(len(secs)))
	for _, s := range append(secs, end) {
		body := s[:13+int(binary.BigEndian.Uint64(s[5:13]))] // without a CRC
		file = append(file, body...)
		file = binary.BigEndian.AppendUint32(file, crc32.Checksum(body, castagnoli))
	}
	return file
}

// A file whose checksums are right but whose sections are missing or out
// of order is refused too, naming what was expected.
func TestExport_ImportRefusesSectionsOutOfOrder(t *testing.T) {
	_, file := exportOf(t, true)
	secs := sections(t, file)
	if len(secs) != 5 || secs[4][0] != 0 { // header, base, log, recorded, end
		t.Fatalf("%d sections in a one-shard compacted export", len(secs))
	}
	if _, err := replay.Import(bytes.NewReader(reseal(secs[:4])), filepath.Join(t.TempDir(), "ok")); err != nil {
		t.Fatalf("a resealed intact file: %v", err)
	}
	for name, c := range map[string]struct {
		secs [][]byte
		want string
	}{
		"no log":          {[][]byte{secs[0], secs[1], secs[3]}, "expected the log section"},
		"log before base": {[][]byte{secs[0], secs[2], secs[1], secs[3]}, "expected the base snapshot section"},
		"no recorded":     {[][]byte{secs[0], secs[1], secs[2]}, "before its recorded state section"},
		"no shards":       {nil, "no shards"},
	} {
		parent := t.TempDir()
		_, err := replay.Import(bytes.NewReader(reseal(c.secs)), filepath.Join(parent, "x"))
		if !errors.Is(err, replay.ErrBadExport) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v, want %q", name, err, c.want)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Fatalf("%s: the refused import left %v", name, ents)
		}
	}
}
