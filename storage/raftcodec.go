package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// Raft log entry encoding, version 1:
//
//	version byte (1) | uvarint index | uvarint term | type byte
//	| varint appended_at (Unix ns; 0 is the zero time)
//	| uvarint len | data | uvarint len | extensions
//	| CRC-32C of everything before (4 bytes big-endian)
//
// The checksum turns a flipped bit on disk into a GetLog error, so a node
// refuses to start from a damaged log instead of serving it.
const logCodecVersion = 1

func encodeLog(l *raft.Log) []byte {
	n := 1 + 3*binary.MaxVarintLen64 + 1 + 2*binary.MaxVarintLen32 + len(l.Data) + len(l.Extensions) + 4
	return appendLog(make([]byte, 0, n), l)
}

// appendLog appends the encoding of l to dst.
func appendLog(dst []byte, l *raft.Log) []byte {
	start := len(dst)
	b := append(dst, logCodecVersion)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.AppendVarint(b, at)
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

var errBadLog = errors.New("storage: corrupt raft log entry")

// decodeLog decodes v into l; Data and Extensions alias v.
func decodeLog(v []byte, l *raft.Log) error {
	if len(v) < 5 {
		return errBadLog
	}
	body := v[:len(v)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(v[len(v)-4:]) {
		return fmt.Errorf("%w: checksum mismatch", errBadLog)
	}
	if body[0] != logCodecVersion {
		return fmt.Errorf("%w: codec version %d", errBadLog, body[0])
	}
	b := body[1:]
	uvar := func() (uint64, bool) {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return x, true
	}
	bytesField := func() ([]byte, bool) {
		n, ok := uvar()
		if !ok || n > uint64(len(b)) {
			return nil, false
		}
		out := b[:n:n]
		b = b[n:]
		if n == 0 {
			out = nil
		}
		return out, true
	}
	var ok bool
	var out raft.Log
	if out.Index, ok = uvar(); !ok {
		return errBadLog
	}
	if out.Term, ok = uvar(); !ok {
		return errBadLog
	}
	if len(b) < 1 {
		return errBadLog
	}
	out.Type = raft.LogType(b[0])
	b = b[1:]
	at, n := binary.Varint(b)
	if n <= 0 {
		return errBadLog
	}
	b = b[n:]
	if at != 0 {
		out.AppendedAt = time.Unix(0, at).UTC()
	}
	if out.Data, ok = bytesField(); !ok {
		return errBadLog
	}
	if out.Extensions, ok = bytesField(); !ok {
		return errBadLog
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errBadLog, len(b))
	}
	*l = out
	return nil
}
