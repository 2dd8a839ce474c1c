package server

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"io"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// Sealed lane keys at rest:
//
//	sealed = 0x01 || nonce [12] || AES-256-GCM(seal key, nonce, K(epoch), aad)
//	aad    = "sessionvault/v1 lane-key" || lane ID || u32be(epoch)
//	seal key = HKDF-SHA256(StoreKey, salt = nil, info = "sessionvault/v1 store-seal", 32)
//
// The AAD binds a sealed key to its lane and epoch: a store thief who can write cannot move a
// sealed key to another lane or replay an old epoch's key as the current one. Nonces are random;
// with 96-bit nonces one StoreKey is good for far more than 2^32 seals' worth of sessions.
const (
	sealVersion  = 1
	sealLabel    = "sessionvault/v1 lane-key"
	sealKeyInfo  = "sessionvault/v1 store-seal"
	sealNonceLen = 12
	sealedLen    = 1 + sealNonceLen + protocol.KeySize + 16
)

var errUnseal = errors.New("server: sealed key does not open (wrong StoreKey, or moved to another lane or epoch)")

type sealer struct{ sealBox }

func newSealer(storeKey []byte, rand io.Reader) (*sealer, error) {
	b, err := newSealBox(storeKey, sealKeyInfo, rand)
	return &sealer{b}, err
}

// sealBox is AES-256-GCM under HKDF-SHA256(storeKey, info), and where its nonces come from: one
// independent key per use of the StoreKey (lane keys at rest, join cookies, rekey grants).
type sealBox struct {
	aead cipher.AEAD // safe for concurrent use
	rand io.Reader
}

func newSealBox(storeKey []byte, info string, rand io.Reader) (sealBox, error) {
	k, err := hkdf.Key(sha256.New, storeKey, nil, info, 32)
	if err != nil {
		return sealBox{}, err
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return sealBox{}, err
	}
	aead, err := cipher.NewGCM(block)
	return sealBox{aead: aead, rand: rand}, err
}

func sealAAD(lane LaneID, epoch uint32) [len(sealLabel) + protocol.LaneIDSize + 4]byte {
	var a [len(sealLabel) + protocol.LaneIDSize + 4]byte
	n := copy(a[:], sealLabel)
	n += copy(a[n:], lane[:])
	a[n], a[n+1], a[n+2], a[n+3] = byte(epoch>>24), byte(epoch>>16), byte(epoch>>8), byte(epoch)
	return a
}

// seal encrypts k for lane and epoch.
func (s *sealer) seal(k *protocol.Key, lane LaneID, epoch uint32) ([]byte, error) {
	out := make([]byte, 1+sealNonceLen, sealedLen)
	out[0] = sealVersion
	if _, err := io.ReadFull(s.rand, out[1:]); err != nil {
		return nil, err
	}
	aad := sealAAD(lane, epoch)
	return s.aead.Seal(out, out[1:1+sealNonceLen], k[:], aad[:]), nil
}

// open decrypts a sealed key of lane and epoch into k.
func (s *sealer) open(k *protocol.Key, b []byte, lane LaneID, epoch uint32) error {
	if len(b) != sealedLen || b[0] != sealVersion {
		k.Wipe()
		return errUnseal
	}
	aad := sealAAD(lane, epoch)
	if _, err := s.aead.Open(k[:0], b[1:1+sealNonceLen], b[1+sealNonceLen:], aad[:]); err != nil {
		k.Wipe()
		return errUnseal
	}
	return nil
}
