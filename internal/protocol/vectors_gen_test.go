package protocol

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// update regenerates testdata/*.txt: go test ./internal/protocol -run TestVectors -update
var update = flag.Bool("update", false, "regenerate testdata/*.txt from the definitions in vectors_gen_test.go")

// Fixed inputs of the vectors.
var (
	vecLane = LaneID(mustHexS("00112233445566778899aabbccddeeff"))
	// RFC 7748 section 6.1: Alice's scalar is the client's, Bob's the server's.
	vecClientScalar = mustHexS("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	vecServerScalar = mustHexS("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
	vecTicket       = mustHexS("5469636b65742d3031323334353637383961626364656630313233343536373839")
	vecCreated      = int64(1700000000)
	vecNow          = int64(1700000002)
	// Low-order points of Curve25519 (u = 0, u = 1, and a point of order 8): X25519 with them is
	// all zeros, which the protocol refuses.
	vecLowOrder = map[string]string{
		"zero":   "0000000000000000000000000000000000000000000000000000000000000000",
		"one":    "0100000000000000000000000000000000000000000000000000000000000000",
		"order8": "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	}
)

func mustHexS(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// vecScalar derives a fixed scalar for rotations: SHA-256 of a readable name.
func vecScalar(name string) []byte {
	s := sha256.Sum256([]byte("sessionvault vector scalar " + name))
	return s[:]
}

func hx(b []byte) string { return hex.EncodeToString(b) }

func newVector(name, kind, expect string, comments ...string) *vector {
	v := &vector{name: name}
	v.add("kind", kind)
	v.add("expect", expect)
	for _, c := range comments {
		v.add("comment", c)
	}
	return v
}

// fail turns a copy of v into a failure vector.
func fail(v *vector, name, expect, comment string) *vector {
	c := v.clone(name)
	c.del("comment").del("base").del("verify-only")
	c.set("expect", expect)
	// keep "comment" right after "expect"
	h := c.h[:2:2]
	h = append(h, [2]string{"comment", comment})
	c.h = append(h, c.h[2:]...)
	return c
}

type keyState struct {
	k      Key
	tr     [32]byte
	cp, sp [32]byte
	shared []byte
}

func genHandshake(t *testing.T, name string, kind int, ticket []byte, comment string) (*vector, keyState) {
	client := scalarEphemeral(t, vecClientScalar)
	server := scalarEphemeral(t, vecServerScalar)
	var st keyState
	st.cp, st.sp = client.Public(), server.Public()
	shared, err := server.shared(st.cp[:])
	if err != nil {
		t.Fatal(err)
	}
	st.shared = bytes.Clone(shared)
	st.tr = HandshakeTranscript(kind, st.cp, st.sp, vecLane, ticket)
	if st.k, err = Handshake(client, st.sp, st.tr, vecLane); err != nil {
		t.Fatal(err)
	}
	hs := "login"
	if kind == HandshakeJoin {
		hs = "join"
	}
	v := newVector(name, "handshake", "ok", comment)
	v.add("handshake", hs)
	v.add("lane", hx(vecLane[:]))
	if kind == HandshakeJoin {
		v.add("ticket", hx(ticket))
	}
	v.add("client-scalar", hx(vecClientScalar))
	v.add("server-scalar", hx(vecServerScalar))
	v.add("client-public", hx(st.cp[:]))
	v.add("server-public", hx(st.sp[:]))
	v.add("shared-secret", hx(st.shared))
	v.add("transcript", hx(st.tr[:]))
	v.add("epoch-key", hx(st.k[:]))
	addSubKeys(v, &st.k, st.tr)
	return v, st
}

func addSubKeys(v *vector, k *Key, tr [32]byte) {
	sk, ek, ck, c := SignKey(k), EventKey(k), deriveSub(k, labelChain), Confirm(k, tr)
	v.add("sign-key", hx(sk[:]))
	v.add("event-key", hx(ek[:]))
	v.add("chain-key", hx(ck[:]))
	v.add("confirm", hx(c[:]))
}

func genRotate(t *testing.T, name string, prev Key, epoch uint32, comment string) (*vector, Key) {
	cs, ss := vecScalar("rotate client "+strconv.Itoa(int(epoch))), vecScalar("rotate server "+strconv.Itoa(int(epoch)))
	client, server := scalarEphemeral(t, cs), scalarEphemeral(t, ss)
	cp, sp := client.Public(), server.Public()
	shared, err := server.shared(cp[:])
	if err != nil {
		t.Fatal(err)
	}
	shared = bytes.Clone(shared)
	tr := RotateTranscript(vecLane, epoch, cp, sp)
	k, err := Ratchet(&prev, client, sp, tr, vecLane, epoch)
	if err != nil {
		t.Fatal(err)
	}
	pc := deriveSub(&prev, labelChain)
	v := newVector(name, "rotate", "ok", comment)
	v.add("lane", hx(vecLane[:]))
	v.add("prev-epoch-key", hx(prev[:]))
	v.add("prev-chain-key", hx(pc[:]))
	v.add("new-epoch", strconv.Itoa(int(epoch)))
	v.add("client-scalar", hx(cs))
	v.add("server-scalar", hx(ss))
	v.add("client-public", hx(cp[:]))
	v.add("server-public", hx(sp[:]))
	v.add("shared-secret", hx(shared))
	v.add("transcript", hx(tr[:]))
	v.add("epoch-key", hx(k[:]))
	addSubKeys(v, &k, tr)
	return v, k
}

type signIn struct {
	method, authority, path, query string
	body                           []byte // nil: no body
	contentDigest                  string // "" : ContentDigest(body) when there is a body
	created, now                   int64
	id                             KeyID
	nonce                          uint64
}

func genSign(t *testing.T, name string, sk Key, in signIn, comments ...string) *vector {
	r := &Request{Method: in.method, Authority: in.authority, Path: in.path, Query: in.query}
	if in.body != nil {
		r.ContentDigest = in.contentDigest
		if r.ContentDigest == "" {
			r.ContentDigest = ContentDigest(in.body)
		}
	}
	p := Params{Created: in.created, KeyID: in.id, Nonce: in.nonce}
	s := NewSigner(&sk)
	sigInput, sig, err := s.Sign(r, &p)
	if err != nil {
		t.Fatal(err)
	}
	base, err := SignatureBase(r, &p)
	if err != nil {
		t.Fatal(err)
	}
	v := newVector(name, "sign", "ok", comments...)
	v.add("sign-key", hx(sk[:]))
	v.add("method", in.method)
	v.add("authority", in.authority)
	v.add("path", in.path)
	v.add("query", in.query)
	v.add("created", strconv.FormatInt(in.created, 10))
	v.add("keyid", in.id.String())
	v.add("nonce", strconv.FormatUint(in.nonce, 10))
	v.add("now", strconv.FormatInt(in.now, 10))
	if r.ContentDigest != "" {
		v.add("content-digest", r.ContentDigest)
	}
	v.add("signature-input", sigInput)
	v.add("signature", sig)
	for _, line := range strings.Split(base, "\n") {
		v.add("base", line)
	}
	if in.body != nil {
		v.body(in.body)
	}
	return v
}

// resign replaces v's signature fields with a valid hmac-sha256 signature, computed with the
// independent signer, over the Signature-Input member value member under label. A vector so
// re-signed is refused for its profile violation alone, not for a bad MAC.
func resign(t *testing.T, v *vector, label, member string) *vector {
	in, sig, err := refSignFields(vectorRefRequest(t, v), label, member, v.hex(t, "sign-key"))
	if err != nil {
		t.Fatalf("%s: resign: %v", v.name, err)
	}
	return v.set("signature-input", in).set("signature", sig)
}

func member(v *vector) string {
	_, m, _ := strings.Cut(v.h[indexOf(v, "signature-input")][1], "=")
	return m
}

func indexOf(v *vector, k string) int {
	for i := range v.h {
		if v.h[i][0] == k {
			return i
		}
	}
	return -1
}

// replaceIn replaces old with new in the first value of key that contains it.
func replaceIn(t *testing.T, v *vector, key, old, new string) *vector {
	for i := range v.h {
		if v.h[i][0] == key && strings.Contains(v.h[i][1], old) {
			v.h[i][1] = strings.Replace(v.h[i][1], old, new, 1)
			return v
		}
	}
	t.Fatalf("%s: %q not in %s", v.name, old, key)
	return nil
}

// insertBefore inserts "k: val" before the first line keyed before.
func insertBefore(v *vector, before, k, val string) *vector {
	i := indexOf(v, before)
	v.h = append(v.h[:i], append([][2]string{{k, val}}, v.h[i:]...)...)
	return v
}

func generateVectors(t *testing.T) {
	old, _ := filepath.Glob("testdata/*.txt")
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	var out []*vector
	emit := func(vs ...*vector) { out = append(out, vs...) }

	// Handshakes.
	login, k0 := genHandshake(t, "handshake-login.txt", HandshakeLogin, nil,
		"Login key agreement (PROTOCOL.md 3.1). The scalars are RFC 7748 section 6.1's Alice (client) and Bob (server).")
	join, _ := genHandshake(t, "handshake-join.txt", HandshakeJoin, vecTicket,
		"Join key agreement (PROTOCOL.md 3.2) with the same scalars and a ticket.")
	emit(login, join)
	for _, name := range []string{"zero", "one", "order8"} {
		v := newVector("handshake-low-order-"+name+".txt", "handshake", "key_agreement",
			"The server public key is a low-order point: X25519 gives all zeros and the client refuses it.")
		v.add("handshake", "login")
		v.add("lane", hx(vecLane[:]))
		v.add("client-scalar", hx(vecClientScalar))
		v.add("server-public", vecLowOrder[name])
		emit(v)
	}

	// Rotations.
	rot1, k1 := genRotate(t, "rotate-epoch1.txt", k0.k, 1, "Rotation from the epoch-0 key of handshake-login.txt to epoch 1 (PROTOCOL.md 3.3).")
	rot2, _ := genRotate(t, "rotate-epoch2.txt", k1, 2, "Rotation from rotate-epoch1.txt's key to epoch 2.")
	emit(rot1, rot2)
	low := newVector("rotate-low-order.txt", "rotate", "key_agreement", "The server's rotation public key is a low-order point.")
	low.add("lane", hx(vecLane[:]))
	low.add("prev-epoch-key", hx(k0.k[:]))
	low.add("new-epoch", "1")
	low.add("client-scalar", hx(vecScalar("rotate client 1")))
	low.add("server-public", vecLowOrder["order8"])
	emit(low)

	// Signed requests, under the epoch-0 sign key of handshake-login.txt.
	sk := SignKey(&k0.k)
	id0 := KeyID{Lane: vecLane, Epoch: 0}
	body := []byte(`{"hello": "world"}`)
	post := signIn{method: "POST", authority: "example.com", path: "/foo", query: "param=Value&Pet=dog", body: body,
		created: vecCreated, now: vecNow, id: id0, nonce: 1}
	sp := genSign(t, "sign-post-body.txt", sk, post, "POST with a body: content-digest is covered. The request is RFC 9421 B.2's test request.")
	emit(sp)
	get := signIn{method: "GET", authority: "example.com:8443", path: "/api/items", created: vecCreated, now: vecNow, id: id0, nonce: 2}
	emit(genSign(t, "sign-get.txt", sk, get, "GET without a body or query: \"@query\" is \"?\", content-digest is not covered."))
	empty := post
	empty.method, empty.body, empty.query, empty.nonce = "PUT", []byte{}, "", 3
	emit(genSign(t, "sign-empty-body.txt", sk, empty, "An empty body is a body: content-digest is covered."))
	esc := get
	esc.path, esc.query, esc.nonce = "/caf%C3%A9/a%20b", "q=%C3%A9&x=1&x=2&empty=", 4
	emit(genSign(t, "sign-escaped.txt", sk, esc, "Escaped path and query are signed as sent."))
	root := get
	root.authority, root.path, root.query, root.nonce = "example.com", "", "a=b", 5
	emit(genSign(t, "sign-empty-path.txt", sk, root, "An empty path is signed as \"/\"."))
	maxv := get
	maxv.id, maxv.nonce, maxv.created, maxv.now = KeyID{Lane: vecLane, Epoch: 0xffffffff}, 1<<63-1, 999999999999999, 999999999999999
	emit(genSign(t, "sign-max-values.txt", sk, maxv, "Largest epoch (u32), nonce (2^63-1) and created (15 digits)."))
	oldest := post
	oldest.created = vecNow - 60
	emit(genSign(t, "sign-created-oldest.txt", sk, oldest, "created 60 s before now: the oldest accepted with the default window."))
	newest := post
	newest.created = vecNow + 5
	emit(genSign(t, "sign-created-newest.txt", sk, newest, "created 5 s after now: the newest accepted with the default window."))
	other := fail(sp, "sign-other-labels.txt", "ok", "Other labels in both dictionaries are ignored.")
	other.set("signature-input", `a=("@method");created=1, `+sp.get(t, "signature-input")+`, z=?0`)
	other.set("signature", `a=:AAAA:, `+sp.get(t, "signature"))
	other.add("verify-only", "yes")
	for _, b := range sp.all("base") {
		other.add("base", b)
	}
	emit(other)

	// Wrong key, tampered components: bad_signature.
	wk := fail(sp, "sign-wrong-key.txt", "bad_signature", "The sign key differs in one bit.")
	wkey := wk.hex(t, "sign-key")
	wkey[31] ^= 1
	wk.set("sign-key", hx(wkey))
	emit(wk)
	emit(fail(sp, "sign-tampered-method.txt", "bad_signature", "@method changed.").set("method", "PUT"))
	emit(fail(sp, "sign-tampered-authority.txt", "bad_signature", "@authority changed.").set("authority", "example.org"))
	emit(fail(sp, "sign-tampered-path.txt", "bad_signature", "@path changed.").set("path", "/Foo"))
	emit(fail(sp, "sign-tampered-query.txt", "bad_signature", "@query changed.").set("query", "param=Value&Pet=cat"))
	emit(replaceIn(t, fail(sp, "sign-tampered-created.txt", "bad_signature", "created changed in Signature-Input."),
		"signature-input", "created=1700000000", "created=1700000001"))
	emit(replaceIn(t, fail(sp, "sign-tampered-nonce.txt", "bad_signature", "nonce changed in Signature-Input."),
		"signature-input", `nonce="1"`, `nonce="2"`))
	emit(replaceIn(t, fail(sp, "sign-tampered-keyid.txt", "bad_signature", "keyid epoch changed in Signature-Input."),
		"signature-input", `_w.0"`, `_w.1"`))
	ts := fail(sp, "sign-tampered-signature.txt", "bad_signature", "One bit of the signature changed.")
	sigBytes, _ := base64.StdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(sp.get(t, "signature"), "sv=:"), ":"))
	sigBytes[0] ^= 0x80
	emit(ts.set("signature", "sv=:"+base64.StdEncoding.EncodeToString(sigBytes)+":"))
	tbd := fail(sp, "sign-tampered-body-and-digest.txt", "bad_signature", "Body and Content-Digest both replaced: the signature covers the digest.")
	tbd.payload = []byte(`{"hello": "mallory"}`)
	emit(tbd.set("content-digest", ContentDigest(tbd.payload)))

	// Digest.
	tb := fail(sp, "sign-tampered-body.txt", "digest", "Body changed, Content-Digest kept.")
	tb.payload = []byte(`{"hello": "World"}`)
	emit(tb)
	nobody := post
	nobody.body = nil
	nb := genSign(t, "x", sk, nobody)
	emit(insertBefore(fail(nb, "sign-body-not-covered.txt", "digest", "Signed without a body; sent with a body and its Content-Digest.").body(body),
		"signature-input", "content-digest", ContentDigest(body)))
	emit(fail(nb, "sign-body-without-digest.txt", "digest", "Signed without a body; sent with a body and no Content-Digest.").body(body))
	br := fail(sp, "sign-body-removed.txt", "digest", "Signed with a body (content-digest covered); sent without body or Content-Digest.").del("content-digest")
	br.payload, br.hasPayload = nil, false
	emit(br)
	s512 := post
	s512.contentDigest = "sha-512=:" + func() string { s := sha512.Sum512(body); return base64.StdEncoding.EncodeToString(s[:]) }() + ":"
	emit(fail(genSign(t, "x", sk, s512), "sign-digest-sha512-only.txt", "digest", "Validly signed, but the Content-Digest has no sha-256 member."))

	// Time.
	exp := post
	exp.created = vecNow - 61
	emit(fail(genSign(t, "x", sk, exp), "sign-expired.txt", "expired", "Validly signed 61 s before now (default window: 60 s)."))
	fut := post
	fut.created = vecNow + 6
	emit(fail(genSign(t, "x", sk, fut), "sign-future.txt", "future", "Validly signed 6 s after now (default skew: 5 s)."))

	// Malformed structured fields (PROTOCOL.md 4.1).
	mal := func(name, comment, key, old, new string) {
		emit(replaceIn(t, fail(sp, name, "malformed", comment), key, old, new))
	}
	sig := sp.get(t, "signature")
	emit(fail(sp, "sign-sf-bad-base64.txt", "malformed", "A character outside base64 in the signature.").set("signature", "sv=:!"+sig[5:]))
	emit(fail(sp, "sign-sf-base64-unpadded.txt", "malformed", "Base64 without its padding.").set("signature", strings.TrimSuffix(sig, "=:")+":"))
	emit(fail(sp, "sign-sf-base64-trailing-bits.txt", "malformed", "Base64 whose unused trailing bits are not zero.").set("signature", flipTrailingBits(t, sig)))
	mal("sign-sf-double-space.txt", "Two spaces between inner-list items.", "signature-input", `"@method" "@authority"`, `"@method"  "@authority"`)
	mal("sign-sf-space-in-params.txt", "A space before a parameter.", "signature-input", `;created=`, `; created=`)
	emit(fail(sp, "sign-sf-leading-space.txt", "malformed", "A leading space.").set("signature-input", " "+sp.get(t, "signature-input")))
	emit(fail(sp, "sign-sf-comma-no-space.txt", "malformed", "Members separated by a comma without a space.").set("signature-input", `a=1,`+sp.get(t, "signature-input")))
	emit(fail(sp, "sign-sf-duplicate-label.txt", "malformed", "The label appears twice.").set("signature-input", sp.get(t, "signature-input")+", "+sp.get(t, "signature-input")))
	mal("sign-sf-duplicate-param.txt", "A parameter appears twice.", "signature-input", `;created=1700000000`, `;created=1700000000;created=1700000000`)
	mal("sign-sf-leading-zero.txt", "An integer with a leading zero.", "signature-input", "created=1700000000", "created=01700000000")
	mal("sign-sf-negative-zero.txt", "The integer -0.", "signature-input", "created=1700000000", "created=-0")
	mal("sign-sf-decimal.txt", "A decimal where an integer belongs (decimals are refused).", "signature-input", "created=1700000000", "created=1700000000.0")
	mal("sign-sf-integer-too-long.txt", "An integer of 16 digits.", "signature-input", "created=1700000000", "created=1700000000000000")
	mal("sign-sf-unterminated-string.txt", "An unterminated string.", "signature-input", `tag="sessionvault"`, `tag="sessionvault`)
	mal("sign-sf-bad-escape.txt", "A backslash escape other than \\\" and \\\\.", "signature-input", `tag="sessionvault"`, `tag="session\vault"`)
	mal("sign-sf-explicit-true.txt", "A true parameter written as =?1.", "signature-input", `;tag="sessionvault"`, `;tag="sessionvault";x=?1`)
	mal("sign-sf-uppercase-key.txt", "A key with an uppercase letter.", "signature-input", "sv=", "Sv=")
	emit(fail(sp, "sign-sf-empty.txt", "malformed", "An empty Signature field.").set("signature", ""))
	mal("sign-keyid-bad.txt", "A keyid that is not <lane>.<epoch>.", "signature-input", `keyid="ABEiM0RVZneImaq7zN3u_w.0"`, `keyid="abc.0"`)
	mal("sign-keyid-epoch-leading-zero.txt", "A keyid epoch with a leading zero.", "signature-input", `_w.0"`, `_w.00"`)
	mal("sign-keyid-epoch-overflow.txt", "A keyid epoch above 2^32-1.", "signature-input", `_w.0"`, `_w.4294967296"`)
	mal("sign-keyid-lane-trailing-bits.txt", "A keyid lane whose unused trailing bits are not zero.", "signature-input", `u_w.0"`, `u_x.0"`)

	// Profile violations (PROTOCOL.md 4). Each is re-signed with a valid MAC over its own
	// Signature-Input where possible, so that only the profile check can refuse it.
	m := member(sp)
	prof := func(name, comment, old, new string) {
		v := fail(sp, name, "profile", comment)
		if !strings.Contains(m, old) {
			t.Fatalf("%s: %q not in member", name, old)
		}
		emit(resign(t, v, Label, strings.Replace(m, old, new, 1)))
	}
	emit(resign(t, fail(sp, "sign-profile-wrong-label.txt", "profile", "The label is sig, not sv."), "sig", m))
	prof("sign-profile-missing-query.txt", "\"@query\" is not covered.", `"@path" "@query"`, `"@path"`)
	prof("sign-profile-reordered.txt", "Components in another order.", `"@method" "@authority"`, `"@authority" "@method"`)
	ex := fail(sp, "sign-profile-extra-component.txt", "profile", "An extra covered component.")
	insertBefore(ex, "signature-input", "field", "content-type: application/json")
	emit(resign(t, ex, Label, strings.Replace(m, `"content-digest")`, `"content-digest" "content-type")`, 1)))
	emit(replaceIn(t, fail(sp, "sign-profile-component-param.txt", "profile", "A covered component with a parameter."),
		"signature-input", `"@query"`, `"@query";req`))
	prof("sign-profile-extra-param.txt", "An extra signature parameter (expires).", `;tag="sessionvault"`, `;tag="sessionvault";expires=1700000300`)
	prof("sign-profile-missing-tag.txt", "The tag parameter is missing.", `;tag="sessionvault"`, ``)
	prof("sign-profile-alg.txt", "alg is not hmac-sha256.", `alg="hmac-sha256"`, `alg="hmac-sha512"`)
	prof("sign-profile-alg-token.txt", "alg is a token, not a string.", `alg="hmac-sha256"`, `alg=hmac-sha256`)
	prof("sign-profile-tag.txt", "tag is not sessionvault.", `tag="sessionvault"`, `tag="other"`)
	prof("sign-profile-nonce-zero.txt", "nonce \"0\" (nonces start at 1).", `nonce="1"`, `nonce="0"`)
	prof("sign-profile-nonce-integer.txt", "nonce is an integer, not a string.", `nonce="1"`, `nonce=1`)
	prof("sign-profile-nonce-leading-zero.txt", "nonce with a leading zero.", `nonce="1"`, `nonce="01"`)
	prof("sign-profile-nonce-overflow.txt", "nonce above 2^63-1.", `nonce="1"`, `nonce="9223372036854775808"`)
	prof("sign-profile-keyid-token.txt", "keyid is a token, not a string.", `keyid="ABEiM0RVZneImaq7zN3u_w.0"`, `keyid=ABEiM0RVZneImaq7zN3u_w.0`)
	prof("sign-profile-created-negative.txt", "created is negative.", `created=1700000000`, `created=-1`)
	prof("sign-profile-created-string.txt", "created is a string.", `created=1700000000`, `created="1700000000"`)
	emit(fail(sp, "sign-profile-signature-short.txt", "profile", "The signature is 31 bytes.").set("signature", "sv=:"+base64.StdEncoding.EncodeToString(sigBytes[:31])+":"))
	emit(fail(sp, "sign-profile-signature-inner-list.txt", "profile", "The signature is an inner list.").set("signature", "sv=("+sig[3:]+")"))
	emit(fail(sp, "sign-profile-signature-param.txt", "profile", "The signature member has a parameter.").set("signature", sig+";x"))
	emit(fail(sp, "sign-profile-input-not-inner-list.txt", "profile", "The Signature-Input member is not an inner list.").set("signature-input", `sv="x"`))

	// Too large.
	emit(fail(sp, "sign-too-large-field.txt", "too_large", "Signature-Input longer than 8192 bytes.").set("signature-input", `a="`+strings.Repeat("x", 8200)+`", `+sp.get(t, "signature-input")))
	emit(fail(sp, "sign-too-large-path.txt", "too_large", "A covered component longer than 8192 bytes.").set("path", "/"+strings.Repeat("a", 8192)))

	// Events.
	ek0, ek1 := EventKey(&k0.k), EventKey(&k1)
	ev := func(name string, key Key, epochKey *Key, e Event, comment string) *vector {
		b, err := SealEvent(&key, &e)
		if err != nil {
			t.Fatal(err)
		}
		v := newVector(name, "event", "ok", comment)
		v.add("epoch-key", hx(epochKey[:]))
		v.add("event-key", hx(key[:]))
		v.add("type", e.Type.String())
		v.add("lane", hx(e.Lane[:]))
		v.add("epoch", strconv.FormatUint(uint64(e.Epoch), 10))
		v.add("seq", strconv.FormatUint(e.Seq, 10))
		v.add("time", strconv.FormatInt(e.Time, 10))
		v.add("deadline", strconv.FormatInt(e.Deadline, 10))
		v.add("reason", e.Reason)
		v.add("sealed", hx(b))
		return v
	}
	revoked := ev("event-revoked.txt", ek0, &k0.k, Event{Type: EventRevoked, Lane: vecLane, Seq: 1, Time: 1700000000000, Reason: "logout"},
		"A revoked event under the epoch-0 key of handshake-login.txt.")
	emit(revoked)
	emit(ev("event-expiring.txt", ek0, &k0.k, Event{Type: EventExpiring, Lane: vecLane, Seq: 2, Time: 1700000000000, Deadline: 1700000300000, Reason: "idle"},
		"An expiring event with a deadline."))
	emit(ev("event-rotate.txt", ek0, &k0.k, Event{Type: EventRotate, Lane: vecLane, Seq: 3, Time: 1700000001000},
		"A rotate event with an empty reason."))
	emit(ev("event-expired-epoch1.txt", ek1, &k1, Event{Type: EventExpired, Lane: vecLane, Epoch: 1, Seq: 4, Time: 1700000002000, Reason: "absolute_timeout"},
		"An expired event under the epoch-1 key of rotate-epoch1.txt."))
	emit(ev("event-max-reason.txt", ek0, &k0.k, Event{Type: EventRevoked, Lane: vecLane, Seq: 1 << 40, Time: -1, Deadline: 1<<63 - 1,
		Reason: strings.Repeat("abcdefghijklmnopqrstuvwxyz0123456789_", 2)[:64]}, "Reason of 64 characters; extreme seq, time and deadline."))
	sealed := revoked.hex(t, "sealed")
	evFail := func(name, expect, comment string, key Key, b []byte) {
		v := newVector(name, "event", expect, comment)
		v.add("event-key", hx(key[:]))
		v.add("sealed", hx(b))
		emit(v)
	}
	mut := func(i int, x byte) []byte { b := bytes.Clone(sealed); b[i] ^= x; return b }
	evFail("event-tampered-seq.txt", "bad_signature", "event-revoked.txt with seq changed.", ek0, mut(29, 1))
	evFail("event-tampered-type.txt", "bad_signature", "event-revoked.txt with its type changed to expired.", ek0, mut(1, 5))
	evFail("event-tampered-tag.txt", "bad_signature", "event-revoked.txt with one bit of the tag changed.", ek0, mut(len(sealed)-1, 1))
	evFail("event-wrong-epoch-key.txt", "bad_signature", "event-revoked.txt checked under the epoch-1 event key.", ek1, sealed)
	evFail("event-sign-key.txt", "bad_signature", "event-revoked.txt checked under the sign key: keys are separated by purpose.", sk, sealed)
	evFail("event-truncated.txt", "malformed", "event-revoked.txt without its last byte.", ek0, sealed[:len(sealed)-1])
	evFail("event-truncated-header.txt", "malformed", "Ten bytes.", ek0, sealed[:10])
	evFail("event-empty.txt", "malformed", "No bytes.", ek0, nil)
	evFail("event-extra-byte.txt", "malformed", "event-revoked.txt with a byte appended.", ek0, append(bytes.Clone(sealed), 0))
	refEv := func(ver, typ byte, reason string) []byte {
		b := refSealEvent(ek0[:], typ, vecLane[:], 0, 1, 1700000000000, 0, reason)
		if ver != 1 {
			b[0] = ver
			b = append(b[:len(b)-32], refHMAC(ek0[:], []byte(refLabelEventMAC), []byte{0}, b[:len(b)-32])...)
		}
		return b
	}
	evFail("event-bad-version.txt", "malformed", "Version byte 2, validly MAC'd.", ek0, refEv(2, 1, "logout"))
	evFail("event-unknown-type.txt", "malformed", "Type 5, validly MAC'd.", ek0, refEv(1, 5, "logout"))
	evFail("event-type-zero.txt", "malformed", "Type 0, validly MAC'd.", ek0, refEv(1, 0, "logout"))
	evFail("event-bad-reason.txt", "malformed", "Reason with an uppercase letter, validly MAC'd.", ek0, refEv(1, 1, "Logout"))
	evFail("event-reason-too-long.txt", "too_large", "Reason of 65 characters, validly MAC'd.", ek0, refEv(1, 1, strings.Repeat("a", 65)))
	mis := refEv(1, 1, "logout")
	mis[46] = 7
	evFail("event-reason-length-mismatch.txt", "malformed", "The reason length byte says 7, the reason has 6.", ek0, mis)

	sa := newVector("event-socket-auth.txt", "socket-auth", "ok", "Event-socket authentication (PROTOCOL.md 6) under the epoch-0 sign key of handshake-login.txt.")
	ch := vecScalar("socket challenge")
	tag := SocketAuth(&sk, vecLane, 0, ch)
	sa.add("sign-key", hx(sk[:]))
	sa.add("lane", hx(vecLane[:]))
	sa.add("epoch", "0")
	sa.add("keyid", id0.String())
	sa.add("challenge", hx(ch))
	sa.add("tag", hx(tag[:]))
	emit(sa)

	// Worker ABI codec (PROTOCOL.md 7).
	abi := func(name, expect, comment string, msg []byte, extra ...[2]string) {
		v := newVector(name, "abi", expect, comment)
		v.add("message", hx(msg))
		if expect == "ok" {
			m, err := DecodeMessage(msg)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			v.add("code", strconv.Itoa(int(m.Code)))
			for _, f := range m.Fields {
				v.add("field", strconv.Itoa(int(f.Tag))+" "+hx(f.Value))
			}
		}
		for _, kv := range extra {
			v.add(kv[0], kv[1])
		}
		emit(v)
	}
	var b []byte
	b = (&Message{Code: 4}).Append(nil)
	b = AppendStringField(b, 1, "POST")
	b = AppendStringField(b, 2, "https://example.com")
	b = AppendStringField(b, 3, "/foo")
	b = AppendStringField(b, 4, "param=Value&Pet=dog")
	b = AppendField(b, 5, body)
	abi("abi-sign-request.txt", "ok", "A sign request (op 0x04) with a body.", b)
	lists := []string{"https://example.com", "https://api.example.com"}
	b = (&Message{Code: 1}).Append(nil)
	b = AppendStringField(b, 1, "https://example.com")
	b = AppendField(b, 2, AppendList(nil, lists))
	b = AppendField(b, 3, AppendList(nil, []string{"/api/"}))
	b = AppendField(b, 4, AppendList(nil, []string{"GET", "POST"}))
	abi("abi-policy-request.txt", "ok", "A policy request (op 0x01) with three lists.", b,
		[2]string{"list", "2 " + hx([]byte(lists[0])) + " " + hx([]byte(lists[1]))},
		[2]string{"list", "3 " + hx([]byte("/api/"))},
		[2]string{"list", "4 " + hx([]byte("GET")) + " " + hx([]byte("POST"))})
	b = (&Message{Code: 0}).Append(nil)
	b = AppendUintField(b, 1, 2)
	b = AppendUintField(b, 2, 300)
	b = AppendUintField(b, 3, 1700043200000)
	b = AppendUintField(b, 4, 0)
	abi("abi-status-reply.txt", "ok", "A status reply (status 0) with integer fields.", b,
		[2]string{"uint", "1 2"}, [2]string{"uint", "2 300"}, [2]string{"uint", "3 1700043200000"}, [2]string{"uint", "4 0"})
	abi("abi-no-fields.txt", "ok", "A wipe request (op 0x0a): no fields.", []byte{1, 0x0a})
	b = AppendField([]byte{1, 4}, 0, nil)
	b = AppendField(b, 1, bytes.Repeat([]byte{0xab}, 200))
	b = AppendField(b, 255, []byte{0})
	abi("abi-tags-edges.txt", "ok", "Tags 0 and 255, an empty value and a 200-byte value (two-byte length).", b)
	b = []byte{1, 4}
	for i := 0; i < MaxFields; i++ {
		b = AppendField(b, byte(i), nil)
	}
	abi("abi-max-fields.txt", "ok", "32 fields, the most allowed.", b)
	abi("abi-too-many-fields.txt", "too_large", "33 fields.", AppendField(bytes.Clone(b), 32, nil))
	abi("abi-empty.txt", "malformed", "No bytes.", nil)
	abi("abi-truncated-header.txt", "malformed", "Only the version byte.", []byte{1})
	abi("abi-bad-version.txt", "malformed", "Version byte 2.", []byte{2, 4, 1, 0})
	abi("abi-nonminimal-length.txt", "malformed", "Length 1 written in two bytes (0x81 0x00).", []byte{1, 4, 1, 0x81, 0x00, 'x'})
	abi("abi-nonminimal-zero-length.txt", "malformed", "Length 0 written in two bytes (0x80 0x00).", []byte{1, 4, 1, 0x80, 0x00})
	abi("abi-length-truncated.txt", "malformed", "The length varint is cut off.", []byte{1, 4, 1, 0x80})
	abi("abi-length-overflow.txt", "malformed", "A length varint of more than 64 bits.", []byte{1, 4, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02})
	abi("abi-tag-without-length.txt", "malformed", "A tag and nothing after it.", []byte{1, 4, 1})
	abi("abi-tags-out-of-order.txt", "malformed", "Tag 2 before tag 1.", []byte{1, 4, 2, 0, 1, 0})
	abi("abi-duplicate-tag.txt", "malformed", "Tag 1 twice.", []byte{1, 4, 1, 0, 1, 0})
	abi("abi-field-past-end.txt", "malformed", "A length of 5 with 2 bytes left.", []byte{1, 4, 1, 5, 'a', 'b'})

	// RFC 9421 Appendix B.2.5, and variants.
	rfc := newVector("rfc9421-b25.txt", "rfc9421", "ok",
		"RFC 9421 Appendix B.2.5 (hmac-sha256 over \"date\" \"@authority\" \"content-type\" of the B.2 test request),",
		"key: B.1.5 test-shared-secret. Reproduced bit for bit from the RFC; the payload is the test request's body.")
	rfc.add("label", "sig-b25")
	rfc.add("key", hx(rfcSharedSecret(t)))
	rfc.add("method", "POST")
	rfc.add("authority", "example.com")
	rfc.add("path", "/foo")
	rfc.add("query", "param=Value&Pet=dog")
	for _, f := range rfcTestFields {
		rfc.add("field", f[0]+": "+f[1])
	}
	rfc.add("signature-input", rfcB25SignatureInput)
	rfc.add("signature", rfcB25Signature)
	for _, line := range strings.Split(rfcB25Base, "\n") {
		rfc.add("base", line)
	}
	rfc.body(body)
	emit(rfc)
	rk := fail(rfc, "rfc9421-b25-wrong-key.txt", "bad_signature", "RFC 9421 B.2.5 with one byte of the key changed.")
	rkey := rk.hex(t, "key")
	rkey[0] ^= 0xff
	emit(rk.set("key", hx(rkey)))
	emit(replaceIn(t, fail(rfc, "rfc9421-b25-tampered-date.txt", "bad_signature", "RFC 9421 B.2.5 with the date field changed."),
		"field", "02:07:55", "02:07:56"))
	emit(fail(rfc, "rfc9421-b25-tampered-authority.txt", "bad_signature", "RFC 9421 B.2.5 with @authority changed.").set("authority", "example.org"))
	emit(replaceIn(t, fail(rfc, "rfc9421-b25-tampered-created.txt", "bad_signature", "RFC 9421 B.2.5 with created changed."),
		"signature-input", "created=1618884473", "created=1618884474"))
	emit(fail(rfc, "rfc9421-b25-wrong-label.txt", "profile", "RFC 9421 B.2.5 verified under a label that is absent.").set("label", "sig-b26"))
	mf := fail(rfc, "rfc9421-b25-missing-field.txt", "profile", "RFC 9421 B.2.5 with the covered content-type field absent.").del("field")
	for _, f := range rfcTestFields {
		if f[0] != "content-type" {
			insertBefore(mf, "signature-input", "field", f[0]+": "+f[1])
		}
	}
	emit(mf)
	emit(replaceIn(t, fail(rfc, "rfc9421-b25-noncanonical.txt", "malformed", "RFC 9421 B.2.5 with a space after a semicolon (valid RFC 8941 parsing, not canonical)."),
		"signature-input", ";keyid=", "; keyid="))
	dh := fail(sp, "rfc9421-dhensby-profile.txt", "ok", dhensbyComment)
	dh.h = [][2]string{{"kind", "rfc9421"}, {"expect", "ok"}, {"comment", dhensbyComment}, {"label", Label}, {"key", hx(sk[:])}}
	for _, k := range []string{"method", "authority", "path", "query"} {
		dh.add(k, sp.get(t, k))
	}
	dh.add("field", "content-digest: "+sp.get(t, "content-digest"))
	dh.add("signature-input", dhensbySignatureInput)
	dh.add("signature", dhensbySignature)
	for _, l := range sp.all("base") {
		dh.add("base", l)
	}
	emit(dh)

	for _, v := range out {
		if err := os.WriteFile(filepath.Join("testdata", v.name), v.marshal(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d vectors", len(out))
}

// flipTrailingBits sets a non-zero unused bit in the last base64 character of a Signature value.
func flipTrailingBits(t *testing.T, sig string) string {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := strings.LastIndexByte(sig, '=') - 1 // last data character
	c := strings.IndexByte(alpha, sig[i])
	if c < 0 {
		t.Fatal("no base64 character")
	}
	return sig[:i] + string(alpha[c|1]) + sig[i+1:]
}
