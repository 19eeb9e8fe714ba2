package raftmux

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// Mutual authentication of a mux connection, right after its header:
//
//	dialer   -> acceptor  dialer nonce (16 bytes)
//	acceptor -> dialer    acceptor nonce (16) | MAC('A')
//	dialer   -> acceptor  MAC('D')
//
// MAC(role) = HMAC-SHA256(key, role | header | dialer nonce | acceptor nonce),
// key = HMAC-SHA256("rhizon raft mux v2", cluster secret). Each side proves
// it knows the secret over the other's fresh nonce, so a recorded handshake
// cannot be replayed, and the header (the group) is bound into both MACs.
// The traffic itself stays plaintext: this keeps strangers from speaking Raft
// to the node (appending entries, voting), not from reading it.
const (
	muxNonceSize = 16
	muxMACSize   = sha256.Size
)

var (
	errMuxAuth        = errors.New("the peer does not know the cluster secret")
	errMuxNoChallenge = errors.New("the peer closed without a challenge (a node of an older version, or it refused the header)")
)

func muxKey(secret string) []byte {
	h := hmac.New(sha256.New, []byte("rhizon raft mux v2"))
	h.Write([]byte(secret))
	return h.Sum(nil)
}

func muxMAC(key []byte, role byte, hdr, dialerNonce, acceptorNonce []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte{role})
	h.Write(hdr)
	h.Write(dialerNonce)
	h.Write(acceptorNonce)
	return h.Sum(nil)
}

// authenticate is the acceptor's side, after it read hdr. The caller sets
// c's deadlines.
func (m *Mux) authenticate(c net.Conn, hdr []byte) error {
	var dn, an [muxNonceSize]byte
	if _, err := io.ReadFull(c, dn[:]); err != nil {
		return fmt.Errorf("read the dialer's nonce: %w", err)
	}
	if _, err := rand.Read(an[:]); err != nil {
		return err
	}
	reply := append(an[:], muxMAC(m.key, 'A', hdr, dn[:], an[:])...)
	if _, err := c.Write(reply); err != nil {
		return fmt.Errorf("write the challenge: %w", err)
	}
	var got [muxMACSize]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("read the dialer's answer: %w", err)
	}
	if !hmac.Equal(got[:], muxMAC(m.key, 'D', hdr, dn[:], an[:])) {
		return errMuxAuth
	}
	return nil
}

// authenticateTo is the dialer's side: it writes hdr and its nonce, checks
// the acceptor's proof and answers with its own. The caller sets c's
// deadlines.
func (m *Mux) authenticateTo(c net.Conn, hdr []byte) error {
	var dn [muxNonceSize]byte
	if _, err := rand.Read(dn[:]); err != nil {
		return err
	}
	if _, err := c.Write(append(append([]byte(nil), hdr...), dn[:]...)); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	var reply [muxNonceSize + muxMACSize]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		// An older node closes at once on this header's version.
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return fmt.Errorf("%w: %v", errMuxNoChallenge, err)
		}
		return fmt.Errorf("read the challenge: %w", err)
	}
	an := reply[:muxNonceSize]
	if !hmac.Equal(reply[muxNonceSize:], muxMAC(m.key, 'A', hdr, dn[:], an)) {
		return errMuxAuth
	}
	if _, err := c.Write(muxMAC(m.key, 'D', hdr, dn[:], an)); err != nil {
		return fmt.Errorf("write the answer: %w", err)
	}
	return nil
}
