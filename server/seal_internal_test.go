package server

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

func TestSealBindsLaneAndEpoch(t *testing.T) {
	storeKey := bytes.Repeat([]byte{7}, 32)
	s, err := newSealer(storeKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var k protocol.Key
	rand.Read(k[:])
	lane := protocol.LaneID{1, 2, 3}
	sealed, err := s.seal(&k, lane, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != sealedLen || bytes.Contains(sealed, k[:]) {
		t.Fatalf("sealed %x", sealed)
	}
	again, _ := s.seal(&k, lane, 5)
	if bytes.Equal(again, sealed) {
		t.Fatal("sealing is deterministic: nonces repeat")
	}
	var got protocol.Key
	if err := s.open(&got, sealed, lane, 5); err != nil || got != k {
		t.Fatalf("open: %v", err)
	}
	// Moved to another lane or epoch, tampered, or opened under another StoreKey: refused, and
	// the output key is zero.
	other := protocol.LaneID{9}
	bad := map[string]func() error{
		"other lane":  func() error { return s.open(&got, sealed, other, 5) },
		"other epoch": func() error { return s.open(&got, sealed, lane, 4) },
		"tampered": func() error {
			b := bytes.Clone(sealed)
			b[20] ^= 1
			return s.open(&got, b, lane, 5)
		},
		"truncated": func() error { return s.open(&got, sealed[:40], lane, 5) },
		"version":   func() error { b := bytes.Clone(sealed); b[0] = 2; return s.open(&got, b, lane, 5) },
		"other store key": func() error {
			s2, _ := newSealer(bytes.Repeat([]byte{8}, 32), rand.Reader)
			return s2.open(&got, sealed, lane, 5)
		},
	}
	for name, f := range bad {
		got = protocol.Key{1}
		if err := f(); err != errUnseal || !got.IsZero() {
			t.Errorf("%s: err %v, key zero %v", name, err, got.IsZero())
		}
	}
}

// TestSealFormat checks the documented format with an independent AES-GCM open.
func TestSealFormat(t *testing.T) {
	storeKey := bytes.Repeat([]byte{7}, 32)
	s, _ := newSealer(storeKey, rand.Reader)
	var k protocol.Key
	rand.Read(k[:])
	lane := protocol.LaneID{4, 5, 6}
	sealed, _ := s.seal(&k, lane, 0x01020304)
	sk, _ := hkdf.Key(sha256.New, storeKey, nil, "sessionvault/v1 store-seal", 32)
	block, _ := aes.NewCipher(sk)
	gcm, _ := cipher.NewGCM(block)
	aad := append([]byte("sessionvault/v1 lane-key"), lane[:]...)
	aad = binary.BigEndian.AppendUint32(aad, 0x01020304)
	pt, err := gcm.Open(nil, sealed[1:13], sealed[13:], aad)
	if err != nil || !bytes.Equal(pt, k[:]) || sealed[0] != 1 {
		t.Fatalf("independent open: %v", err)
	}
}
