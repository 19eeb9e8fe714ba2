package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/rhizon/rhizon/replay"
)

func exportCmd() *cobra.Command {
	var dataDir, out string
	var shardFlags []uint
	c := &cobra.Command{
		Use:   "export",
		Short: "Write a stopped node's shards (base snapshot, Raft log, recorded state) to a file to replay elsewhere",
		Long: "Export writes, for each shard of a stopped node's data directory, what `rhizon replay` reads:\n" +
			"the newest Raft snapshot where the log was compacted, the Raft log up to the applied index and\n" +
			"the recorded state, in one file checked by CRC-32C (format in the README). `rhizon import`\n" +
			"turns the file into a data directory on another machine. The file holds every tenant's data\n" +
			"of the shards exported.\n\n" +
			"Exit status: 0 written, 1 error, 2 usage.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if out == "" {
				return &exitErr{exitUsage, fmt.Errorf("-o FILE: the file to write is required")}
			}
			if _, err := os.Stat(filepath.Join(dataDir, "state")); err != nil {
				return &exitErr{exitUsage, fmt.Errorf("--data-dir %s: not a node's data directory (no state/): %w", dataDir, err)}
			}
			var shards []uint32
			for _, s := range shardFlags {
				if s > 1<<32-1 {
					return &exitErr{exitUsage, fmt.Errorf("--shard %d: out of range", s)}
				}
				shards = append(shards, uint32(s))
			}
			written, n, err := exportFile(dataDir, shards, out)
			if err != nil {
				return &exitErr{exitError, err}
			}
			fmt.Fprintf(c.OutOrStdout(), "exported shards %v of %s to %s (%d bytes)\n", written, dataDir, out, n)
			return nil
		},
	}
	fs := c.Flags()
	fs.StringVar(&dataDir, "data-dir", "./data", "the stopped node's data directory")
	fs.UintSliceVar(&shardFlags, "shard", nil, "a shard to export, repeatable (default: every shard in the data directory)")
	fs.StringVarP(&out, "output", "o", "", "the file to write (replaced only once complete)")
	return c
}

// exportFile writes the export to a temporary file beside out and renames
// it into place once complete and synced.
func exportFile(dataDir string, shards []uint32, out string) ([]uint32, int64, error) {
	dir := filepath.Dir(out)
	f, err := os.CreateTemp(dir, "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name()) // a no-op after the rename
	}()
	bw := bufio.NewWriterSize(f, 256<<10)
	written, err := replay.Export(dataDir, shards, bw, dir)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	var n int64
	if err == nil {
		n, err = f.Seek(0, 1)
	}
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = os.Rename(f.Name(), out)
	}
	if err != nil {
		return nil, 0, err
	}
	return written, n, nil
}

func importCmd() *cobra.Command {
	var dataDir string
	c := &cobra.Command{
		Use:   "import FILE",
		Short: "Build a data directory from a `rhizon export` file, for `rhizon replay --data-dir`",
		Long: "Import reads a file written by `rhizon export`, verifies every section's CRC-32C and builds a\n" +
			"data directory (state/, raft/, shards/N/snapshots) at --data-dir, which must not exist or be\n" +
			"empty. It builds under a temporary name and renames only once the whole file was verified: a\n" +
			"corrupt or truncated file leaves nothing. Then `rhizon replay --data-dir DIR` replays it.\n" +
			"The directory is for replay: it holds no Raft vote or peers to run a node on.\n\n" +
			"Exit status: 0 imported, 1 error (a bad file among them), 2 usage.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if dataDir == "" {
				return &exitErr{exitUsage, fmt.Errorf("--data-dir: the directory to build is required")}
			}
			f, err := os.Open(args[0])
			if err != nil {
				return &exitErr{exitUsage, err}
			}
			defer func() { _ = f.Close() }()
			shards, err := replay.Import(f, dataDir)
			if err != nil {
				return &exitErr{exitError, fmt.Errorf("%s: %w", args[0], err)}
			}
			fmt.Fprintf(c.OutOrStdout(), "imported shards %v into %s; replay it with: rhizon replay --data-dir %s\n",
				shards, dataDir, dataDir)
			return nil
		},
	}
	c.Flags().StringVar(&dataDir, "data-dir", "", "the data directory to build (new or empty)")
	return c
}
