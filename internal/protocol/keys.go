package protocol

import (
	"encoding"
	"encoding/base64"
	"hash"
	"io"
)

// Sizes of the protocol's fixed-length values.
const (
	PublicKeySize = 32 // X25519 public key
	KeySize       = 32 // epoch key and every derived key
	LaneIDSize    = 16 // lane identifier
	TagSize       = 32 // HMAC-SHA256 output
)

// Domain-separation labels. Every derivation and every MAC of the protocol starts with its own
// label, so that no value made for one purpose verifies for another.
const (
	labelLogin         = "sessionvault/v1 login"
	labelJoin          = "sessionvault/v1 join"
	labelRekey         = "sessionvault/v1 rekey"
	labelRotate        = "sessionvault/v1 rotate"
	labelEpochKey      = "sessionvault/v1 epoch-key"
	labelSign          = "sessionvault/v1 sign"
	labelEvent         = "sessionvault/v1 event"
	labelChain         = "sessionvault/v1 chain"
	labelRekeyChain    = "sessionvault/v1 rekey-chain"
	labelConfirm       = "sessionvault/v1 confirm"
	labelEventMAC      = "sessionvault/v1 event-mac"
	labelSocketAuth    = "sessionvault/v1 socket-auth"
	labelTicket        = "sessionvault/v1 ticket"
	labelSessionHandle = "sessionvault/v1 handle"
)

// Handshake kinds, bound into the transcript.
const (
	HandshakeLogin = iota + 1 // a new session from credentials
	HandshakeJoin             // a new lane of a session, from a join ticket
	HandshakeRekey            // a new session replacing the current one, requested under its key
)

// LaneID names one lane (one worker's key under a session). It is public: it travels in every
// request's keyid. It is not the session ID, which never leaves the server.
type LaneID [LaneIDSize]byte

// String returns the unpadded base64url form used in keyid.
func (l LaneID) String() string { return base64.RawURLEncoding.EncodeToString(l[:]) }

// Key is a 32-byte secret. Its zero value is "no key". Wipe zeroes it in place.
type Key [KeySize]byte

// Wipe zeroes k.
func (k *Key) Wipe() { clear(k[:]) }

// IsZero reports whether k holds no key.
func (k *Key) IsZero() bool {
	var z Key
	return ctEqual(k[:], z[:])
}

// Ephemeral is one X25519 key pair used for a single handshake or rotation. Wipe zeroes the
// scalar; an Ephemeral is single-use (the exchange wipes it).
type Ephemeral struct {
	scalar [32]byte
	pub    [PublicKeySize]byte
	live   bool
}

// NewEphemeral generates a key pair from rand (crypto/rand, the WASI random source in the wasm
// module, or a fixed source in vectors).
func NewEphemeral(rand io.Reader) (*Ephemeral, error) {
	e := &Ephemeral{live: true}
	if _, err := io.ReadFull(rand, e.scalar[:]); err != nil {
		return nil, err
	}
	if err := x25519(&e.pub, &e.scalar, &basePoint); err != nil {
		e.Wipe()
		return nil, err
	}
	return e, nil
}

// Public returns the public half.
func (e *Ephemeral) Public() [PublicKeySize]byte { return e.pub }

// Wipe zeroes the private scalar. The Ephemeral cannot be used for an exchange afterwards.
func (e *Ephemeral) Wipe() {
	clear(e.scalar[:])
	e.live = false
}

// shared returns X25519(e, peer). It refuses invalid or low-order peer keys.
func (e *Ephemeral) shared(peer []byte) ([]byte, error) {
	if e == nil || !e.live {
		return nil, &parseError{what: "ephemeral key already used", class: ErrKeyAgreement}
	}
	if len(peer) != PublicKeySize {
		return nil, &parseError{what: "public key must be 32 bytes", offset: len(peer), class: ErrKeyAgreement}
	}
	var p, out [32]byte
	copy(p[:], peer)
	if err := x25519(&out, &e.scalar, &p); err != nil {
		clear(out[:])
		return nil, &parseError{what: "invalid or low-order public key", class: ErrKeyAgreement}
	}
	return out[:], nil
}

// HandshakeTranscript is SHA-256 over the handshake's public values (PROTOCOL.md section 3):
//
//	label || 0x00 || client public || server public || lane ID || SHA-256(ticket)   (join only)
func HandshakeTranscript(kind int, clientPub, serverPub [PublicKeySize]byte, lane LaneID, ticket []byte) [32]byte {
	h := newSHA256()
	switch kind {
	case HandshakeJoin:
		h.Write([]byte(labelJoin))
	case HandshakeRekey:
		h.Write([]byte(labelRekey))
	default:
		h.Write([]byte(labelLogin))
	}
	h.Write([]byte{0})
	h.Write(clientPub[:])
	h.Write(serverPub[:])
	h.Write(lane[:])
	if kind == HandshakeJoin {
		t := sum256(append([]byte(labelTicket), ticket...))
		h.Write(t[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// RotateTranscript is SHA-256(label || 0x00 || lane || u32be(newEpoch) || client public || server public).
func RotateTranscript(lane LaneID, newEpoch uint32, clientPub, serverPub [PublicKeySize]byte) [32]byte {
	h := newSHA256()
	h.Write([]byte(labelRotate))
	h.Write([]byte{0})
	h.Write(lane[:])
	var e [4]byte
	putU32(e[:], newEpoch)
	h.Write(e[:])
	h.Write(clientPub[:])
	h.Write(serverPub[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// epochKey = HKDF-SHA256(ikm, salt, info = label || lane || u32be(epoch)).
func epochKey(ikm, salt []byte, lane LaneID, epoch uint32) Key {
	var info [len(labelEpochKey) + LaneIDSize + 4]byte
	n := copy(info[:], labelEpochKey)
	n += copy(info[n:], lane[:])
	putU32(info[n:], epoch)
	prk := hkdfExtract(salt, ikm)
	k := hkdfExpand(&prk, info[:])
	prk.Wipe()
	return k
}

// hkdfExtract is RFC 5869 HKDF-Extract with SHA-256. It is ours rather than crypto/hkdf's so that
// every intermediate (the HMAC pads, hash states and outputs) lives in buffers we zero: the
// standard package leaves them on the heap, and in the worker's linear memory a wiped key must not
// be recoverable from a stray PRK or HMAC state.
func hkdfExtract(salt, ikm []byte) Key {
	m := NewMAC(salt) // an empty salt is HashLen zeros: both pad to the same HMAC key
	m.Reset()
	m.Write(ikm)
	var prk Key
	copy(prk[:], m.Sum()[:])
	m.Wipe()
	return prk
}

// hkdfExpand is RFC 5869 HKDF-Expand for one output block (L = 32): T(1) = HMAC(PRK, info || 0x01).
func hkdfExpand(prk *Key, info []byte) Key {
	m := NewMAC(prk[:])
	m.Reset()
	m.Write(info)
	m.Write([]byte{1})
	var out Key
	copy(out[:], m.Sum()[:])
	m.Wipe()
	return out
}

// Handshake completes a login or join key agreement from one side: own is this side's ephemeral,
// peerPub the other side's public key, and the transcript binds both publics, the lane and the
// ticket. The result is the epoch-0 key of the lane. own is wiped.
func Handshake(own *Ephemeral, peerPub [PublicKeySize]byte, transcript [32]byte, lane LaneID) (Key, error) {
	s, err := own.shared(peerPub[:])
	own.Wipe()
	if err != nil {
		return Key{}, err
	}
	k := epochKey(s, transcript[:], lane, 0)
	clear(s)
	return k, nil
}

// Ratchet derives the key of epoch newEpoch from the previous epoch's key and a fresh X25519
// exchange: own is this side's new ephemeral, peerPub the other side's, transcript is
// [RotateTranscript]. Knowing prev alone is not enough: an observer who stole prev but did not take
// part in the exchange cannot follow the lane past this rotation. own is wiped.
//
//	K(e+1) = HKDF-SHA256(ikm = X25519 || transcript, salt = Expand(K(e), "chain"), info = epoch-key || lane || u32be(e+1))
func Ratchet(prev *Key, own *Ephemeral, peerPub [PublicKeySize]byte, transcript [32]byte, lane LaneID, newEpoch uint32) (Key, error) {
	return chained(prev, labelChain, own, peerPub, transcript, lane, newEpoch)
}

// Rekey derives the first key of the new lane that a re-key creates, from the current lane's key
// K(e) (the key the re-key request is signed with) and a fresh X25519 exchange; transcript is
// [HandshakeTranscript] of kind [HandshakeRekey]. own is wiped.
//
//	K'(0) = HKDF-SHA256(ikm = X25519 || transcript, salt = Expand(K(e), "rekey-chain"), info = epoch-key || new lane || u32be(0))
//
// The current key is what makes the new one the worker's: anyone who can get a re-key request
// sent under it (page script asking the worker to fetch {prefix}rekey with a public key of its
// own) knows the ephemeral secret of that exchange, but not K(e).
func Rekey(prev *Key, own *Ephemeral, peerPub [PublicKeySize]byte, transcript [32]byte, newLane LaneID) (Key, error) {
	return chained(prev, labelRekeyChain, own, peerPub, transcript, newLane, 0)
}

// chained is an epoch key from an X25519 exchange salted with a key derived from prev.
func chained(prev *Key, label string, own *Ephemeral, peerPub [PublicKeySize]byte, transcript [32]byte, lane LaneID, epoch uint32) (Key, error) {
	s, err := own.shared(peerPub[:])
	own.Wipe()
	if err != nil {
		return Key{}, err
	}
	chain := deriveSub(prev, label)
	ikm := append(s, transcript[:]...)
	k := epochKey(ikm, chain[:], lane, epoch)
	clear(ikm)
	clear(s)
	chain.Wipe()
	return k, nil
}

// SignKey is the lane's RFC 9421 hmac-sha256 key for an epoch: HKDF-Expand(K(e), "sign", 32).
func SignKey(k *Key) Key { return deriveSub(k, labelSign) }

// EventKey is the key that MACs server-to-worker events of an epoch: HKDF-Expand(K(e), "event", 32).
func EventKey(k *Key) Key { return deriveSub(k, labelEvent) }

// Confirm is the server's key confirmation for a handshake or rotation:
// HMAC(HKDF-Expand(K, "confirm", 32), transcript). The worker refuses a key whose confirmation
// does not match, so a substituted server public key is caught before any request is signed.
func Confirm(k *Key, transcript [32]byte) [TagSize]byte {
	c := deriveSub(k, labelConfirm)
	defer c.Wipe()
	return macOnce(&c, transcript[:])
}

// CheckConfirm compares a received confirmation with the expected one in constant time.
func CheckConfirm(k *Key, transcript [32]byte, got []byte) error {
	want := Confirm(k, transcript)
	if !ctEqual(want[:], got) {
		return &parseError{what: "key confirmation does not match", class: ErrBadSignature}
	}
	return nil
}

// SocketAuth is the lane's answer to an event-socket challenge:
// HMAC(sign key, label || 0x00 || lane || u32be(epoch) || challenge).
func SocketAuth(signKey *Key, lane LaneID, epoch uint32, challenge []byte) [TagSize]byte {
	var e [4]byte
	putU32(e[:], epoch)
	return macOnce(signKey, []byte(labelSocketAuth), []byte{0}, lane[:], e[:], challenge)
}

// SessionHandle is a non-reversible, non-secret name for a session ID, fit for logs and admin
// views: base64url(SHA-256(label || id))[:16]. The raw ID never appears in a log line.
func SessionHandle(id []byte) string {
	s := sum256(append([]byte(labelSessionHandle), id...))
	return base64.RawURLEncoding.EncodeToString(s[:12])
}

// deriveSub = HKDF-Expand(epoch key, label, 32).
func deriveSub(k *Key, label string) Key {
	return hkdfExpand(k, []byte(label))
}

// MAC is HMAC-SHA256 under a fixed key, with the key's inner and outer states precomputed so that
// each Sum costs only the message's blocks. Wipe zeroes every key-derived byte it holds (pads,
// saved states, hash states). A MAC is not safe for concurrent use.
type MAC struct {
	inner, outer           stateHash // no type assertion per use: it costs an itab lookup
	innerState, outerState []byte
	sum                    [sha256Size]byte
}

type stateHash interface {
	hash.Hash
	encoding.BinaryMarshaler
	encoding.BinaryUnmarshaler
}

// NewMAC returns a MAC keyed with key (any length; RFC 2104 rules).
func NewMAC(key []byte) *MAC { return newMAC(key, newSHA256) }

// newMAC is NewMAC on the SHA-256 implementation newHash makes (tests run the wasm build's
// plain-Go one natively).
func newMAC(key []byte, newHash func() stateHash) *MAC {
	var pad [sha256BlockSize]byte
	defer clear(pad[:])
	if len(key) > sha256BlockSize {
		s := sum256(key)
		copy(pad[:], s[:])
		clear(s[:])
	} else {
		copy(pad[:], key)
	}
	m := &MAC{inner: newHash(), outer: newHash()}
	for i := range pad {
		pad[i] ^= 0x36
	}
	m.inner.Write(pad[:])
	for i := range pad {
		pad[i] ^= 0x36 ^ 0x5c
	}
	m.outer.Write(pad[:])
	var err error
	if m.innerState, err = m.inner.MarshalBinary(); err != nil {
		panic("protocol: sha256 state: " + err.Error())
	}
	if m.outerState, err = m.outer.MarshalBinary(); err != nil {
		panic("protocol: sha256 state: " + err.Error())
	}
	return m
}

// Reset prepares m for a new message.
func (m *MAC) Reset() {
	if err := m.inner.UnmarshalBinary(m.innerState); err != nil {
		panic("protocol: mac used after Wipe")
	}
}

// Write adds message bytes. Call Reset first.
func (m *MAC) Write(p []byte) { m.inner.Write(p) }

// WriteString adds message bytes.
func (m *MAC) WriteString(s string) { io.WriteString(m.inner, s) }

// Sum finishes the message and returns the tag (valid until the next Sum).
func (m *MAC) Sum() *[TagSize]byte {
	in := m.inner.Sum(m.sum[:0])
	if err := m.outer.UnmarshalBinary(m.outerState); err != nil {
		panic("protocol: mac used after Wipe")
	}
	m.outer.Write(in)
	m.outer.Sum(m.sum[:0])
	return &m.sum
}

// Equal reports, in constant time, whether the last Sum equals tag.
func (m *MAC) Equal(tag []byte) bool { return ctEqual(m.sum[:], tag) }

// Wipe zeroes every key-derived byte; m must not be used afterwards.
func (m *MAC) Wipe() {
	clear(m.innerState)
	clear(m.outerState)
	clear(m.sum[:])
	if m.inner != nil {
		scrubHash(m.inner)
		scrubHash(m.outer)
	}
}

// scrubHash zeroes h's block buffer and resets it. Reset alone leaves the buffer, where the outer
// hash keeps the last inner digest (key-derived): a 1-byte write then a 63-byte write copy 64
// zero bytes into the buffer (a lone 64-byte write would bypass it), and Reset restores the rest.
func scrubHash(h hash.Hash) {
	var zero [sha256BlockSize]byte
	h.Reset()
	h.Write(zero[:1])
	h.Write(zero[1:])
	h.Reset()
}

// macOnce computes HMAC(key, parts...) with a throwaway MAC that is wiped before returning.
func macOnce(key *Key, parts ...[]byte) [TagSize]byte {
	m := NewMAC(key[:])
	m.Reset()
	for _, p := range parts {
		m.Write(p)
	}
	out := *m.Sum()
	m.Wipe()
	return out
}
