package protocol

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"hash"
	"math/rand/v2"
	"reflect"
	"testing"
	"unsafe"
)

// scalarWiped reports whether e's private scalar is all zeros and e is spent.
func scalarWiped(e *Ephemeral) bool {
	return e.scalar == [32]byte{} && !e.live
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func randKey(rng *rand.Rand) Key { return Key(randBytes(rng, KeySize)) }

func randEphemeral(t testing.TB, rng *rand.Rand) *Ephemeral {
	return scalarEphemeral(t, randBytes(rng, 32))
}

// TestMACMatchesHMAC compares MAC with crypto/hmac over random keys (0 to 200 bytes, so below,
// at and above the 64-byte block: RFC 2104 hashes longer keys) and messages, reusing each MAC for
// several messages.
func TestMACMatchesHMAC(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	keyLens := []int{0, 1, 31, 32, 33, 63, 64, 65, 100, 128, 200}
	for i := 0; i < 400; i++ {
		kl := keyLens[i%len(keyLens)]
		if i >= len(keyLens)*4 {
			kl = rng.IntN(201)
		}
		key := randBytes(rng, kl)
		m := NewMAC(key)
		for j := 0; j < 4; j++ {
			msg := randBytes(rng, rng.IntN(300))
			m.Reset()
			// Split the message across Write and WriteString calls.
			cut := 0
			if len(msg) > 0 {
				cut = rng.IntN(len(msg))
			}
			m.Write(msg[:cut])
			m.WriteString(string(msg[cut:]))
			got := *m.Sum()
			ref := hmac.New(sha256.New, key)
			ref.Write(msg)
			want := ref.Sum(nil)
			if !bytes.Equal(got[:], want) {
				t.Fatalf("key %d bytes, msg %d bytes: got %x want %x", kl, len(msg), got, want)
			}
			if !m.Equal(want) {
				t.Fatal("Equal refuses the right tag")
			}
			want[j] ^= 1
			if m.Equal(want) || m.Equal(want[:31]) || m.Equal(nil) {
				t.Fatal("Equal accepts a wrong tag")
			}
		}
		m.Wipe()
	}
}

// memoryOf returns the bytes of the object behind a pointer-shaped interface value.
func memoryOf(t *testing.T, x any) []byte {
	t.Helper()
	v := reflect.ValueOf(x)
	if v.Kind() != reflect.Pointer {
		t.Fatalf("%T is not a pointer", x)
	}
	return unsafe.Slice((*byte)(v.UnsafePointer()), v.Elem().Type().Size())
}

// TestMACWipe checks that Wipe leaves no key-derived byte in the MAC: not in its saved pad
// states, its last tag, nor anywhere in the memory of its two SHA-256 states (chaining value and
// block buffer), which must read exactly as a fresh sha256.New().
func TestMACWipe(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	fresh := memoryOf(t, sha256.New())
	for _, kl := range []int{32, 64, 100} {
		key := randBytes(rng, kl)
		m := NewMAC(key)
		for _, n := range []int{0, 10, 64, 100, 300} {
			m.Reset()
			m.Write(randBytes(rng, n))
			m.Sum()
		}
		states := [][]byte{m.innerState, m.outerState}
		m.Wipe()
		for _, s := range states {
			if !bytes.Equal(s, make([]byte, len(s))) {
				t.Fatal("saved pad state not zeroed")
			}
		}
		if m.sum != [TagSize]byte{} {
			t.Fatal("last tag not zeroed")
		}
		for name, h := range map[string]hash.Hash{"inner": m.inner, "outer": m.outer} {
			if mem := memoryOf(t, h); !bytes.Equal(mem, fresh) {
				t.Fatalf("key %d bytes: %s SHA-256 state after Wipe:\n%x\nfresh:\n%x", kl, name, mem, fresh)
			}
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("a wiped MAC can be reused")
				}
			}()
			m.Reset()
		}()
	}
}

func TestKeyWipe(t *testing.T) {
	k := randKey(rand.New(rand.NewPCG(1, 1)))
	if k.IsZero() {
		t.Fatal("random key is zero")
	}
	k.Wipe()
	if !k.IsZero() || k != (Key{}) {
		t.Fatal("Wipe left key bytes")
	}
	var z Key
	if !z.IsZero() {
		t.Fatal("zero key is not IsZero")
	}
}

func TestSignerVerifierWipe(t *testing.T) {
	k := randKey(rand.New(rand.NewPCG(2, 2)))
	s := NewSigner(&k)
	p := Params{Created: 1, KeyID: KeyID{Epoch: 1}, Nonce: 1}
	if _, _, err := s.Sign(&Request{Method: "GET", Authority: "a"}, &p); err != nil {
		t.Fatal(err)
	}
	s.Wipe()
	if !bytes.Equal(s.buf[:cap(s.buf)], make([]byte, cap(s.buf))) {
		t.Fatal("signer buffer not zeroed")
	}
	if !bytes.Equal(s.mac.innerState, make([]byte, len(s.mac.innerState))) {
		t.Fatal("signer MAC not wiped")
	}
	v := NewVerifier(&k)
	v.Wipe()
	if !bytes.Equal(v.mac.outerState, make([]byte, len(v.mac.outerState))) {
		t.Fatal("verifier MAC not wiped")
	}
}

func TestEphemeral(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	e := randEphemeral(t, rng)
	peer := randEphemeral(t, rng)
	pp := peer.Public()
	if _, err := e.shared(pp[:31]); ErrorClass(err) != "key_agreement" {
		t.Fatalf("short public key: %v", err)
	}
	if _, err := Handshake(e, pp, [32]byte{}, LaneID{}); err != nil {
		t.Fatal(err)
	}
	if !scalarWiped(e) {
		t.Fatal("Handshake left the scalar")
	}
	if _, err := Handshake(e, pp, [32]byte{}, LaneID{}); ErrorClass(err) != "key_agreement" {
		t.Fatalf("second use of an ephemeral: %v", err)
	}
	if _, err := NewEphemeral(bytes.NewReader(make([]byte, 31))); err == nil {
		t.Fatal("NewEphemeral accepts a short random source")
	}
	// A failed exchange wipes too.
	f := randEphemeral(t, rng)
	if _, err := Handshake(f, [32]byte{}, [32]byte{}, LaneID{}); ErrorClass(err) != "key_agreement" {
		t.Fatalf("zero point: %v", err)
	}
	if !scalarWiped(f) {
		t.Fatal("failed Handshake left the scalar")
	}
}

// TestHandshakeSymmetry: client and server derive the same epoch-0 key for random scalars, lanes
// and tickets, for login and join; the key depends on every transcript input.
func TestHandshakeSymmetry(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 100; i++ {
		cs, ss := randBytes(rng, 32), randBytes(rng, 32)
		lane := LaneID(randBytes(rng, LaneIDSize))
		ticket := randBytes(rng, rng.IntN(40))
		kind := HandshakeLogin + i%2
		c, s := scalarEphemeral(t, cs), scalarEphemeral(t, ss)
		cp, sp := c.Public(), s.Public()
		tr := HandshakeTranscript(kind, cp, sp, lane, ticket)
		kc, err := Handshake(c, sp, tr, lane)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := Handshake(s, cp, tr, lane)
		if err != nil {
			t.Fatal(err)
		}
		if kc != ks || kc.IsZero() {
			t.Fatalf("client %x, server %x", kc, ks)
		}
		if err := CheckConfirm(&kc, tr, func() []byte { c := Confirm(&ks, tr); return c[:] }()); err != nil {
			t.Fatal(err)
		}
		// A man in the middle who substitutes the server's public key gets a different transcript
		// and key: the server's confirmation does not check on the client.
		mitm := randEphemeral(t, rng)
		mp := mitm.Public()
		trC := HandshakeTranscript(kind, cp, mp, lane, ticket)
		c2 := scalarEphemeral(t, cs)
		kc2, err := Handshake(c2, mp, trC, lane)
		if err != nil {
			t.Fatal(err)
		}
		serverConfirm := Confirm(&ks, tr)
		if err := CheckConfirm(&kc2, trC, serverConfirm[:]); ErrorClass(err) != "bad_signature" {
			t.Fatalf("substituted key passes confirmation: %v", err)
		}
		// Different lane or ticket: different key.
		other := lane
		other[0] ^= 1
		c3, s3 := scalarEphemeral(t, cs), scalarEphemeral(t, ss)
		k3, _ := Handshake(c3, sp, HandshakeTranscript(kind, cp, sp, other, ticket), other)
		k4, _ := Handshake(s3, cp, HandshakeTranscript(HandshakeLogin+HandshakeJoin-kind, cp, sp, lane, ticket), lane)
		if k3 == kc || k4 == kc {
			t.Fatal("key does not depend on lane or handshake kind")
		}
	}
	// Join binds the ticket; login ignores it.
	var cp, sp [32]byte
	a := HandshakeTranscript(HandshakeJoin, cp, sp, LaneID{}, []byte("a"))
	b := HandshakeTranscript(HandshakeJoin, cp, sp, LaneID{}, []byte("b"))
	if a == b {
		t.Fatal("join transcript ignores the ticket")
	}
	if HandshakeTranscript(HandshakeLogin, cp, sp, LaneID{}, []byte("a")) != HandshakeTranscript(HandshakeLogin, cp, sp, LaneID{}, nil) {
		t.Fatal("login transcript depends on a ticket")
	}
}

// TestRatchet checks the rotation's forward security as far as a test can: both sides agree;
// K(e+1) differs for different ephemeral pairs (so it is not a function of K(e) alone); an
// attacker who holds K(e) and sees both new public keys, but not the new scalars, does not arrive
// at K(e+1) by any of the derivations open to him (every HKDF from K(e), the transcript and the
// public values, or an exchange with a scalar of his own); and K(e+1) still depends on K(e).
func TestRatchet(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	lane := LaneID(randBytes(rng, LaneIDSize))
	prev := randKey(rng)
	seen := map[Key]bool{}
	for i := 0; i < 50; i++ {
		c, s := randEphemeral(t, rng), randEphemeral(t, rng)
		cp, sp := c.Public(), s.Public()
		tr := RotateTranscript(lane, 1, cp, sp)
		kc, err := Ratchet(&prev, c, sp, tr, lane, 1)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := Ratchet(&prev, s, cp, tr, lane, 1)
		if err != nil {
			t.Fatal(err)
		}
		if kc != ks {
			t.Fatal("sides disagree")
		}
		if seen[kc] || kc == prev {
			t.Fatal("K(e+1) repeats across different ephemeral pairs")
		}
		seen[kc] = true

		// The attacker's candidates from K(e), the transcript and the public keys.
		chain := deriveSub(&prev, labelChain)
		pub := append(append(cp[:0:0], cp[:]...), sp[:]...)
		candidates := []Key{
			epochKey(tr[:], chain[:], lane, 1),
			epochKey(pub, chain[:], lane, 1),
			epochKey(append(pub, tr[:]...), chain[:], lane, 1),
			epochKey(prev[:], tr[:], lane, 1),
			epochKey(chain[:], tr[:], lane, 1),
			epochKey(append(make([]byte, 32), tr[:]...), chain[:], lane, 1), // all-zero shared secret
			SignKey(&prev), EventKey(&prev), chain, deriveSub(&prev, labelConfirm),
		}
		// ... or an exchange with his own scalar against either public key.
		for _, peer := range [][32]byte{cp, sp} {
			eve := randEphemeral(t, rng)
			ke, err := Ratchet(&prev, eve, peer, tr, lane, 1)
			if err != nil {
				t.Fatal(err)
			}
			candidates = append(candidates, ke)
		}
		for j, k := range candidates {
			if k == kc {
				t.Fatalf("candidate %d derives K(e+1) without the new scalars", j)
			}
		}

		prev = kc
	}
}

func TestRatchetDependsOnPrevAndEpoch(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	lane := LaneID(randBytes(rng, LaneIDSize))
	cs, ss := randBytes(rng, 32), randBytes(rng, 32)
	prev := randKey(rng)
	derive := func(prev Key, epoch uint32, lane LaneID) Key {
		c, s := scalarEphemeral(t, cs), scalarEphemeral(t, ss)
		cp, sp := c.Public(), s.Public()
		k, err := Ratchet(&prev, c, sp, RotateTranscript(lane, epoch, cp, sp), lane, epoch)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := derive(prev, 1, lane)
	other := prev
	other[0] ^= 1
	otherLane := lane
	otherLane[15] ^= 1
	if derive(other, 1, lane) == base {
		t.Fatal("K(e+1) does not depend on K(e)")
	}
	if derive(prev, 2, lane) == base {
		t.Fatal("K(e+1) does not depend on the epoch")
	}
	if derive(prev, 1, otherLane) == base {
		t.Fatal("K(e+1) does not depend on the lane")
	}
	if derive(prev, 1, lane) != base {
		t.Fatal("Ratchet is not deterministic")
	}
}

func TestSubKeysDistinct(t *testing.T) {
	k := randKey(rand.New(rand.NewPCG(12, 12)))
	keys := []Key{k, SignKey(&k), EventKey(&k), deriveSub(&k, labelChain), deriveSub(&k, labelConfirm)}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[i] == keys[j] {
				t.Fatalf("keys %d and %d collide", i, j)
			}
		}
	}
}

func TestSocketAuthAndHandle(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	sk := randKey(rng)
	lane := LaneID(randBytes(rng, 16))
	ch := randBytes(rng, 32)
	a := SocketAuth(&sk, lane, 1, ch)
	if a == SocketAuth(&sk, lane, 2, ch) || a == SocketAuth(&sk, lane, 1, ch[:31]) {
		t.Fatal("socket auth does not bind epoch and challenge")
	}
	id := randBytes(rng, 32)
	h := SessionHandle(id)
	if len(h) != 16 || h != SessionHandle(id) || h == SessionHandle(id[:31]) {
		t.Fatalf("handle %q", h)
	}
	if bytes.Contains([]byte(h), id[:4]) {
		t.Fatal("handle shows the ID")
	}
}

// TestHKDFMatchesStandardLibrary: our wipeable HKDF is RFC 5869 HKDF-SHA256, checked against
// crypto/hkdf on random salts (including empty and longer than a block), IKMs and infos.
func TestHKDFMatchesStandardLibrary(t *testing.T) {
	for i := range 500 {
		salt := make([]byte, i%97)
		ikm := make([]byte, 1+i%131)
		info := make([]byte, i%61)
		crand.Read(salt)
		crand.Read(ikm)
		crand.Read(info)
		want, err := hkdf.Key(sha256.New, ikm, salt, string(info), KeySize)
		if err != nil {
			t.Fatal(err)
		}
		prk := hkdfExtract(salt, ikm)
		got := hkdfExpand(&prk, info)
		if !bytes.Equal(got[:], want) {
			t.Fatalf("case %d: hkdf = %x, want %x", i, got, want)
		}
	}
}

// TestRekey: a re-key's K'(0) (PROTOCOL.md 3.4) is the formula computed independently (crypto/ecdh,
// crypto/hkdf); both sides agree; it depends on the current key K(e); and a party that ran the
// exchange with its own scalar but lacks K(e) (page script that had the worker send a rekey
// request carrying its public key) does not arrive at it, by a login's derivation or by Rekey
// under any key it could know.
func TestRekey(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	for i := 0; i < 20; i++ {
		lane := LaneID(randBytes(rng, LaneIDSize))
		prev := randKey(rng)
		cs, ss := randBytes(rng, 32), randBytes(rng, 32)
		c, s := scalarEphemeral(t, cs), scalarEphemeral(t, ss)
		cp, sp := c.Public(), s.Public()
		tr := HandshakeTranscript(HandshakeRekey, cp, sp, lane, nil)
		kc, err := Rekey(&prev, c, sp, tr, lane)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := Rekey(&prev, s, cp, tr, lane)
		if err != nil {
			t.Fatal(err)
		}
		if kc != ks {
			t.Fatal("sides disagree")
		}

		// Independently: ikm = X25519(c, S) || T, salt = HKDF-Expand(K(e), "sessionvault/v1 rekey-chain", 32),
		// info = "sessionvault/v1 epoch-key" || L' || u32be(0).
		priv, err := ecdh.X25519().NewPrivateKey(cs)
		if err != nil {
			t.Fatal(err)
		}
		peer, err := ecdh.X25519().NewPublicKey(sp[:])
		if err != nil {
			t.Fatal(err)
		}
		shared, err := priv.ECDH(peer)
		if err != nil {
			t.Fatal(err)
		}
		salt, err := hkdf.Expand(sha256.New, prev[:], "sessionvault/v1 rekey-chain", 32)
		if err != nil {
			t.Fatal(err)
		}
		info := append(append([]byte("sessionvault/v1 epoch-key"), lane[:]...), 0, 0, 0, 0)
		want, err := hkdf.Key(sha256.New, append(shared, tr[:]...), salt, string(info), KeySize)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(kc[:], want) {
			t.Fatalf("K'(0) = %x, want %x", kc, want)
		}

		// Without K(e): a login's derivation, Rekey under no key or under keys the page may see
		// derived (none are), or a rotation's chain label.
		login, err := Handshake(scalarEphemeral(t, cs), sp, tr, lane)
		if err != nil {
			t.Fatal(err)
		}
		var zero Key
		noKey, err := Rekey(&zero, scalarEphemeral(t, cs), sp, tr, lane)
		if err != nil {
			t.Fatal(err)
		}
		ratchet, err := Ratchet(&prev, scalarEphemeral(t, cs), sp, tr, lane, 0)
		if err != nil {
			t.Fatal(err)
		}
		other := prev
		other[31] ^= 1
		otherKey, err := Rekey(&other, scalarEphemeral(t, cs), sp, tr, lane)
		if err != nil {
			t.Fatal(err)
		}
		for name, k := range map[string]Key{"login derivation": login, "zero key": noKey, "rotation label": ratchet, "another K(e)": otherKey} {
			if k == kc {
				t.Fatalf("%s gives the re-key's K'(0)", name)
			}
		}
		if !scalarWiped(c) || !scalarWiped(s) {
			t.Fatal("Rekey left an ephemeral scalar")
		}
	}
}
