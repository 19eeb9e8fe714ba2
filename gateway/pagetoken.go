package gateway

import (
	"encoding/base64"
	"encoding/binary"
	"errors"

	"github.com/rhizon/rhizon/actor"
)

// pageTokenVersion leads every page token, so the encoding can change later
// without misreading tokens that clients still hold.
const pageTokenVersion = 1

const pageTokenLen = 1 + 8 + 4

var errBadPageToken = errors.New("page_token is malformed: pass the next_page_token of the previous response unchanged, or leave it empty for the first page")

// EncodePageToken returns the opaque token for the history position pos:
// base64url (no padding) of a version byte, the raft index and the ordinal.
// Clients must treat it as opaque.
func EncodePageToken(pos actor.Position) string {
	var b [pageTokenLen]byte
	b[0] = pageTokenVersion
	binary.BigEndian.PutUint64(b[1:9], pos.Index)
	binary.BigEndian.PutUint32(b[9:], pos.Ordinal)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// DecodePageToken parses a token from EncodePageToken; the empty token is the
// start of the history (the zero Position).
func DecodePageToken(tok string) (actor.Position, error) {
	if tok == "" {
		return actor.Position{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != pageTokenLen || b[0] != pageTokenVersion {
		return actor.Position{}, errBadPageToken
	}
	return actor.Position{Index: binary.BigEndian.Uint64(b[1:9]), Ordinal: binary.BigEndian.Uint32(b[9:])}, nil
}
