package vault

import (
	"encoding/base64"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// secretsOf names every secret the server derived for the lane's epochs: epoch keys, sign and
// event keys, and the HMAC chaining values of the sign key (what a precomputed MAC holds).
func secretsOf(s *fakeServer) map[string][]byte {
	out := map[string][]byte{}
	for e, k := range s.keys {
		n := "epoch " + string(rune('0'+e))
		sk, ek := protocol.SignKey(&k), protocol.EventKey(&k)
		in, outer := hmacChains(sk)
		out[n+" key"] = append([]byte(nil), k[:]...)
		out[n+" sign key"] = append([]byte(nil), sk[:]...)
		out[n+" event key"] = append([]byte(nil), ek[:]...)
		out[n+" sign ipad state"] = in
		out[n+" sign opad state"] = outer
	}
	return out
}

func TestWipeZeroes(t *testing.T) {
	h := active(t)
	h.sign(SignRequest{Method: "POST", Origin: appOrigin, Path: "/api/x", Body: []byte("body"), HasBody: true})
	h.rotate()
	h.sign(getMe)
	h.v.BeginRotate() // a live ephemeral scalar too
	secrets := secretsOf(h.srv)

	// Positive control: the scanner finds the keys the vault holds before the wipe.
	found := holds(h.v, secrets)
	for _, want := range []string{"epoch 1 key", "epoch 1 event key", "epoch 0 event key", "epoch 1 sign ipad state", "epoch 1 sign opad state"} {
		if !contains(found, want) {
			t.Fatalf("scanner misses %q before the wipe (found %v)", want, found)
		}
	}

	signer, eph := h.v.signer, h.v.eph
	h.v.Wipe()

	for name, k := range map[string]protocol.Key{"key": h.v.key, "eventKey": h.v.eventKey, "prevEvent": h.v.prevEvent} {
		if !k.IsZero() {
			t.Errorf("v.%s not zero after wipe", name)
		}
	}
	if h.v.signer != nil || h.v.eph != nil || h.v.ticket != nil {
		t.Error("the vault still references its signer, ephemeral or ticket")
	}
	if h.v.lane != (protocol.LaneID{}) || h.v.epoch != 0 {
		t.Error("lane or epoch survives the wipe")
	}
	// The signer's MAC state: precomputed pads, last sum, base buffer.
	sv := reflect.ValueOf(signer).Elem()
	mac := structField(t, sv, "mac")
	for _, f := range []string{"innerState", "outerState", "sum"} {
		if b := bytesField(t, mac, f); len(b) == 0 || !isZero(b) {
			t.Errorf("signer MAC %s not zero after wipe: %x", f, b)
		}
	}
	if b := bytesField(t, sv, "buf"); !isZero(b) {
		t.Errorf("signer buffer not zero after wipe")
	}
	if b := bytesField(t, reflect.ValueOf(eph).Elem(), "scalar"); !isZero(b) {
		t.Errorf("ephemeral scalar not zero after wipe")
	}
	// Nothing reachable from the vault, nor from the objects it dropped, holds any window of
	// any secret.
	for what, x := range map[string]any{"vault": h.v, "old signer": signer, "old ephemeral": eph} {
		if found := holds(x, secrets); len(found) > 0 {
			t.Errorf("after wipe, the %s still holds %v", what, found)
		}
	}
}

// A wipe by event, and the key replacement of a rotation, leave nothing of the old keys behind
// except the previous event key (kept for EventGrace on purpose).
func TestOldKeysGone(t *testing.T) {
	h := active(t)
	h.sign(getMe)
	old := secretsOf(h.srv)
	oldSigner := h.v.signer
	h.rotate()
	found := holds(h.v, old)
	if len(found) != 1 || found[0] != "epoch 0 event key" {
		t.Fatalf("after rotation the vault holds %v of epoch 0, want only its event key", found)
	}
	if found := holds(oldSigner, old); len(found) > 0 {
		t.Fatalf("the replaced signer holds %v", found)
	}
	h.v.HandleEvent(h.srv.event(protocol.EventRevoked, "", 0))
	if found := holds(h.v, secretsOf(h.srv)); len(found) > 0 {
		t.Fatalf("after a revoke event the vault holds %v", found)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The scanner for replies finds a key in every encoding and at every alignment (positive
// control for TestNoKeyMaterialInReplies).
func TestLeakDetector(t *testing.T) {
	var k [32]byte
	for i := range k {
		k[i] = byte(i*37 + 11)
	}
	for off := 0; off < 24; off++ {
		w := k[off : off+8]
		for _, enc := range []string{
			string(w),
			hex.EncodeToString(w),
			strings.ToUpper(hex.EncodeToString(w)),
			base64.StdEncoding.EncodeToString(w),
			base64.RawURLEncoding.EncodeToString(w),
		} {
			for pre := 0; pre < 3; pre++ {
				b := append([]byte(strings.Repeat("x", pre)), enc...)
				if leak(b, k[:]) == "" {
					t.Fatalf("offset %d prefix %d: %q not detected", off, pre, enc)
				}
			}
		}
		// 8 key bytes inside a longer base64 stream, at any alignment.
		for pre := 0; pre < 3; pre++ {
			src := append(make([]byte, pre), w...)
			for _, e := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
				if leak([]byte(e.EncodeToString(append(src, 1, 2, 3))), k[:]) == "" {
					t.Fatalf("offset %d alignment %d: base64 not detected", off, pre)
				}
			}
		}
	}
	if leak([]byte(strings.Repeat("sv=:abc:", 100)), k[:]) != "" {
		t.Fatal("false positive")
	}
}

// A whole session through the ABI: no reply, success or error, carries any window of any key.
func TestNoKeyMaterialInReplies(t *testing.T) {
	h := newHarness(t, 90*time.Minute)
	v := New(newRand(1), h.local.now)
	var replies [][]byte
	do := func(in []byte) protocol.Message {
		t.Helper()
		out := v.Call(in)
		replies = append(replies, out)
		m, err := protocol.DecodeMessage(out)
		if err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		return m
	}
	ok := func(in []byte) protocol.Message {
		t.Helper()
		m := do(in)
		if m.Code != 0 {
			e, _ := m.Get(1)
			t.Fatalf("op %#x: %s: %s", in[1], CodeOf(m.Code), e)
		}
		return m
	}
	pubOf := func(m protocol.Message) (p [32]byte) {
		b, _ := m.Get(1)
		copy(p[:], b)
		return p
	}
	allSecrets := map[string][]byte{}
	collect := func(prefix string) {
		for n, s := range secretsOf(h.srv) {
			allSecrets[prefix+n] = s
		}
	}
	finish := func(r Handshake, ticket []byte) []byte {
		fs := []protocol.Field{field(1, r.Lane[:]), field(2, r.ServerPub[:]), field(3, r.Confirm),
			ufield(4, uint64(r.ServerTime)), ufield(5, uint64(r.ServerTime+43200_000))}
		if ticket != nil {
			fs = append(fs, field(6, ticket))
		}
		return msg(OpFinish, fs...)
	}
	signs := func() {
		ok(msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/api/me"), sfield(4, "a=1")))
		ok(msg(OpSign, sfield(1, "POST"), sfield(2, appOrigin), sfield(3, "/api/x"), field(5, []byte("{}"))))
		ok(msg(OpSign, sfield(1, "PUT"), sfield(2, appOrigin), sfield(3, "/api/x"), field(5, nil)))
		do(msg(OpSign, sfield(1, "GET"), sfield(2, "https://evil.example"), sfield(3, "/")))
		do(msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/api/../x")))
		ok(msg(OpSocketAuth, field(1, make([]byte, 32))))
		do(msg(OpSocketAuth, field(1, make([]byte, 8))))
		ok(msg(OpStatus))
	}

	do(msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/")))
	ok(msg(OpPolicy, sfield(1, appOrigin)))
	do(msg(OpPolicy, sfield(1, appOrigin)))

	// Login, with a failed confirmation first.
	pub := pubOf(ok(msg(OpBegin, ufield(1, protocol.HandshakeLogin))))
	r := h.srv.login(pub)
	collect("failed login ")
	bad := append([]byte(nil), r.Confirm...)
	bad[0] ^= 1
	do(msg(OpFinish, field(1, r.Lane[:]), field(2, r.ServerPub[:]), field(3, bad), ufield(4, uint64(r.ServerTime))))
	pub = pubOf(ok(msg(OpBegin, ufield(1, protocol.HandshakeLogin))))
	r = h.srv.login(pub)
	collect("login ")
	ok(finish(r, nil))
	signs()

	// Events of each kind, and refused ones.
	ok(msg(OpEvent, field(1, h.srv.event(protocol.EventExpiring, "idle", r.ServerTime+60_000))))
	ok(msg(OpEvent, field(1, h.srv.event(protocol.EventRotate, "", 0))))
	replay := h.srv.event(protocol.EventRotate, "", 0)
	ok(msg(OpEvent, field(1, replay)))
	do(msg(OpEvent, field(1, replay)))
	do(msg(OpEvent, field(1, replay[:40])))

	// Rotation, with a failed confirmation first.
	pub = pubOf(ok(msg(OpRotateBegin)))
	rot := h.srv.rotate(pub)
	badc := append([]byte(nil), rot.Confirm...)
	badc[3] ^= 1
	do(msg(OpRotateFinish, field(1, rot.ServerPub[:]), ufield(2, uint64(rot.Epoch)), field(3, badc)))
	do(msg(OpRotateFinish, field(1, rot.ServerPub[:]), ufield(2, uint64(rot.Epoch+1)), field(3, rot.Confirm)))
	pub = pubOf(ok(msg(OpRotateBegin)))
	rot = h.srv.rotate(pub)
	ok(msg(OpRotateFinish, field(1, rot.ServerPub[:]), ufield(2, uint64(rot.Epoch)), field(3, rot.Confirm)))
	h.srv.commit(rot)
	collect("login ")
	signs()
	ok(msg(OpEvent, field(1, h.srv.eventAt(0, protocol.EventExpiring, "", r.ServerTime+120_000))))
	ok(msg(OpEvent, field(1, h.srv.event(protocol.EventRevoked, "admin", 0))))
	ok(msg(OpStatus))
	do(msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/")))

	// Join with a ticket, then logout.
	ticket := []byte("join-ticket-0123456789abcdef-SECRET")
	allSecrets["ticket"] = ticket
	pub = pubOf(ok(msg(OpBegin, ufield(1, protocol.HandshakeJoin))))
	do(finish(h.srv.handshake(protocol.HandshakeJoin, pub, ticket), nil)) // no ticket: refused
	r = h.srv.handshake(protocol.HandshakeJoin, pub, ticket)
	collect("join ")
	ok(finish(r, ticket))
	signs()
	ok(msg(OpWipe))
	ok(msg(OpStatus))
	do(msg(OpRotateBegin))

	if len(replies) < 40 {
		t.Fatalf("only %d replies", len(replies))
	}
	if len(allSecrets) < 20 {
		t.Fatalf("only %d secrets", len(allSecrets))
	}
	for i, out := range replies {
		for name, s := range allSecrets {
			if how := leak(out, s); how != "" {
				t.Errorf("reply %d carries the %s (%s): %x", i, name, how, out)
			}
		}
	}
}
