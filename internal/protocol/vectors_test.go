package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The vector file format (testdata/README.md): "key: value" header lines, then optionally one
// blank line and a payload that runs, byte for byte, to the end of the file. A key may repeat;
// the order of repeated keys matters. Every file has a "kind:" and an "expect:" line.

type vector struct {
	name       string
	h          [][2]string
	payload    []byte
	hasPayload bool
}

func (v *vector) add(k, val string) *vector {
	v.h = append(v.h, [2]string{k, val})
	return v
}

func (v *vector) body(b []byte) *vector {
	v.payload, v.hasPayload = b, true
	return v
}

// get returns the single value of k ("" if absent) and fails the test if k repeats.
func (v *vector) get(t testing.TB, k string) string {
	t.Helper()
	vals := v.all(k)
	switch len(vals) {
	case 0:
		return ""
	case 1:
		return vals[0]
	}
	t.Fatalf("%s: key %q repeats", v.name, k)
	return ""
}

func (v *vector) has(k string) bool { return len(v.all(k)) > 0 }

func (v *vector) all(k string) []string {
	var out []string
	for _, kv := range v.h {
		if kv[0] == k {
			out = append(out, kv[1])
		}
	}
	return out
}

// set replaces the first value of k (or adds it).
func (v *vector) set(k, val string) *vector {
	for i := range v.h {
		if v.h[i][0] == k {
			v.h[i][1] = val
			return v
		}
	}
	return v.add(k, val)
}

func (v *vector) del(k string) *vector {
	v.h = slices.DeleteFunc(v.h, func(kv [2]string) bool { return kv[0] == k })
	return v
}

func (v *vector) clone(name string) *vector {
	c := &vector{name: name, h: slices.Clone(v.h), hasPayload: v.hasPayload}
	if v.payload != nil {
		c.payload = slices.Clone(v.payload)
	}
	return c
}

func (v *vector) hex(t testing.TB, k string) []byte { t.Helper(); return mustHex(t, v.get(t, k)) }

func (v *vector) int(t testing.TB, k string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(v.get(t, k), 10, 64)
	if err != nil {
		t.Fatalf("%s: %s: %v", v.name, k, err)
	}
	return n
}

func (v *vector) uint(t testing.TB, k string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(v.get(t, k), 10, 64)
	if err != nil {
		t.Fatalf("%s: %s: %v", v.name, k, err)
	}
	return n
}

func (v *vector) marshal() []byte {
	var b bytes.Buffer
	for _, kv := range v.h {
		b.WriteString(kv[0])
		b.WriteString(":")
		if kv[1] != "" {
			b.WriteString(" ")
			b.WriteString(kv[1])
		}
		b.WriteString("\n")
	}
	if v.hasPayload {
		b.WriteString("\n")
		b.Write(v.payload)
	}
	return b.Bytes()
}

func parseVector(name string, data []byte) (*vector, error) {
	v := &vector{name: name}
	head := data
	if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
		head, v.payload, v.hasPayload = data[:i+1], data[i+2:], true
	}
	for _, line := range strings.SplitAfter(string(head), "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			return nil, os.ErrInvalid // a header line must end with a newline
		}
		line = strings.TrimSuffix(line, "\n")
		k, val, ok := strings.Cut(line, ":")
		if !ok || k == "" {
			return nil, os.ErrInvalid
		}
		v.add(k, strings.TrimPrefix(val, " "))
	}
	return v, nil
}

func loadVectors(t testing.TB, glob string) []*vector {
	t.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", glob))
	if err != nil {
		t.Fatal(err)
	}
	var out []*vector
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := parseVector(filepath.Base(name), data)
		if err != nil {
			t.Fatalf("%s: bad vector file: %v", name, err)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		t.Fatalf("no vectors match testdata/%s", glob)
	}
	return out
}

// expectClass compares an error with a vector's expect line.
func expectClass(t *testing.T, v *vector, err error) {
	t.Helper()
	want := v.get(t, "expect")
	got := "ok"
	if err != nil {
		got = ErrorClass(err)
		if got == "" {
			t.Fatalf("error outside every class: %v", err)
		}
	}
	if got != want {
		t.Fatalf("expect %s, got %s (%v)", want, got, err)
	}
	if err != nil {
		t.Logf("refused as expected: %v", err)
	}
}

func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	vs := loadVectors(t, "*.txt")
	kinds := map[string]int{}
	for _, v := range vs {
		kind := v.get(t, "kind")
		kinds[kind]++
		t.Run(v.name, func(t *testing.T) {
			if !v.has("expect") {
				t.Fatal("no expect line")
			}
			if want := kind + "-"; !strings.HasPrefix(v.name, want) && !(kind == "socket-auth" && strings.HasPrefix(v.name, "event-")) {
				t.Errorf("file of kind %s should be named %s*.txt", kind, want)
			}
			switch kind {
			case "rfc9421":
				runRFC9421Vector(t, v)
			case "sign":
				runSignVector(t, v)
			case "handshake":
				runHandshakeVector(t, v)
			case "rotate":
				runRotateVector(t, v)
			case "event":
				runEventVector(t, v)
			case "socket-auth":
				runSocketAuthVector(t, v)
			case "abi":
				runABIVector(t, v)
			default:
				t.Fatalf("unknown kind %q", kind)
			}
		})
	}
	for _, k := range []string{"rfc9421", "sign", "handshake", "rotate", "event", "socket-auth", "abi"} {
		if kinds[k] == 0 {
			t.Errorf("no vectors of kind %s", k)
		}
	}
}

// RFC 9421 Appendix B: the test request of B.2, the shared secret of B.1.5, and the hmac-sha256
// signature of B.2.5, as printed in the RFC (line wrapping of RFC 8792 undone).
const (
	rfcSharedSecretB64   = "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
	rfcB25SignatureInput = `sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"`
	rfcB25Signature      = `sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:`
	rfcB25Base           = "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n" +
		"\"@authority\": example.com\n" +
		"\"content-type\": application/json\n" +
		`"@signature-params": ("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"`
)

var rfcTestFields = [][2]string{
	{"date", "Tue, 20 Apr 2021 02:07:55 GMT"},
	{"content-type", "application/json"},
	{"content-digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"},
	{"content-length", "18"},
}

func rfcSharedSecret(t testing.TB) []byte {
	k, err := base64.StdEncoding.DecodeString(rfcSharedSecretB64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rfcTestRequest(t testing.TB) *http.Request {
	return refRequest(t, "POST", "example.com", "/foo", "param=Value&Pet=dog", rfcTestFields)
}

// vectorFields returns the "field: name: value" lines of v.
func vectorFields(t testing.TB, v *vector) [][2]string {
	var out [][2]string
	for _, f := range v.all("field") {
		name, val, ok := strings.Cut(f, ": ")
		if !ok {
			t.Fatalf("bad field line %q", f)
		}
		out = append(out, [2]string{name, val})
	}
	return out
}

func vectorRequest(t testing.TB, v *vector) *Request {
	fields := vectorFields(t, v)
	r := &Request{
		Method:        v.get(t, "method"),
		Authority:     v.get(t, "authority"),
		Path:          v.get(t, "path"),
		Query:         v.get(t, "query"),
		ContentDigest: v.get(t, "content-digest"),
	}
	if len(fields) > 0 {
		r.Field = func(name string) (string, bool) {
			var vals []string
			for _, f := range fields {
				if strings.EqualFold(f[0], name) {
					vals = append(vals, f[1])
				}
			}
			return strings.Join(vals, ", "), len(vals) > 0
		}
	}
	return r
}

func vectorRefRequest(t testing.TB, v *vector) *http.Request {
	fields := vectorFields(t, v)
	if cd := v.get(t, "content-digest"); cd != "" {
		fields = append(fields, [2]string{"content-digest", cd})
	}
	return refRequest(t, v.get(t, "method"), v.get(t, "authority"), v.get(t, "path"), v.get(t, "query"), fields)
}

func vectorBase(v *vector) string { return strings.Join(v.all("base"), "\n") }

// checkRefSignature checks an ok vector's signature with the independent verifier and its base
// lines with the independent base builder.
func checkRefSignature(t *testing.T, v *vector, key []byte, label string) {
	t.Helper()
	r := vectorRefRequest(t, v)
	base, err := refSignatureBase(r, v.get(t, "signature-input"), label)
	if err != nil {
		t.Fatalf("reference base: %v", err)
	}
	if base != vectorBase(v) {
		t.Fatalf("reference base differs from the vector's:\n%s\n--- vector:\n%s", base, vectorBase(v))
	}
	if err := refVerify(r, v.get(t, "signature-input"), v.get(t, "signature"), label, key); err != nil {
		t.Fatalf("reference verifier refuses: %v", err)
	}
}

func runRFC9421Vector(t *testing.T, v *vector) {
	key := v.hex(t, "key")
	label := v.get(t, "label")
	err := VerifyAny(v.get(t, "signature-input"), v.get(t, "signature"), label, key, vectorRequest(t, v))
	expectClass(t, v, err)
	if v.get(t, "expect") == "ok" {
		checkRefSignature(t, v, key, label)
	}
	if v.name == "rfc9421-b25.txt" {
		// Bit for bit the RFC's text, not merely self-consistent.
		switch {
		case !bytes.Equal(key, rfcSharedSecret(t)):
			t.Error("key is not RFC 9421 B.1.5 test-shared-secret")
		case v.get(t, "signature-input") != rfcB25SignatureInput:
			t.Error("Signature-Input is not RFC 9421 B.2.5's")
		case v.get(t, "signature") != rfcB25Signature:
			t.Error("Signature is not RFC 9421 B.2.5's")
		case vectorBase(v) != rfcB25Base:
			t.Error("signature base is not RFC 9421 B.2.5's")
		}
	}
}

// verifyPipeline runs the verification steps of PROTOCOL.md section 4.3 that the protocol package
// owns, in order; testdata/README.md describes it for the other implementations.
func verifyPipeline(t testing.TB, v *vector) (*Signed, error) {
	signKey := Key(v.hex(t, "sign-key"))
	s, err := ParseSigned(v.get(t, "signature-input"), v.get(t, "signature"))
	if err != nil {
		return nil, err
	}
	vf := NewVerifier(&signKey)
	defer vf.Wipe()
	if err := vf.Verify(s, vectorRequest(t, v)); err != nil {
		return s, err
	}
	if err := (Window{}).CheckCreated(s.Created, time.Unix(v.int(t, "now"), 0)); err != nil {
		return s, err
	}
	cd := v.get(t, "content-digest")
	switch {
	case cd != "":
		sum := sha256.Sum256(v.payload)
		if err := CheckContentDigest(cd, &sum); err != nil {
			return s, err
		}
	case v.hasPayload:
		return s, &parseError{what: "request with a body has no content-digest", class: ErrDigest}
	}
	return s, nil
}

func runSignVector(t *testing.T, v *vector) {
	s, err := verifyPipeline(t, v)
	expectClass(t, v, err)
	if v.get(t, "expect") != "ok" {
		return
	}
	signKey := Key(v.hex(t, "sign-key"))
	id, err := ParseKeyID(v.get(t, "keyid"))
	if err != nil {
		t.Fatal(err)
	}
	p := Params{Created: v.int(t, "created"), KeyID: id, Nonce: v.uint(t, "nonce")}
	if s.Params != (Params{Created: p.Created, KeyID: id, Nonce: p.Nonce, HasBody: v.hasPayload}) {
		t.Fatalf("parsed params %+v", s.Params)
	}
	r := vectorRequest(t, v)
	if v.hasPayload {
		if got := ContentDigest(v.payload); got != v.get(t, "content-digest") {
			t.Fatalf("ContentDigest = %s", got)
		}
		if ref := refContentDigest(v.payload); ref != v.get(t, "content-digest") {
			t.Fatalf("reference content digest = %s", ref)
		}
	} else if v.has("content-digest") {
		t.Fatal("content-digest without a body")
	}
	base, err := SignatureBase(r, &p)
	if err != nil || base != vectorBase(v) {
		t.Fatalf("SignatureBase = %q, %v", base, err)
	}
	if v.get(t, "verify-only") == "yes" {
		// The headers carry more than the signer writes (other labels): verification only.
		checkRefSignature(t, v, signKey[:], Label)
		return
	}
	sg := NewSigner(&signKey)
	defer sg.Wipe()
	in, sig, err := sg.Sign(r, &p)
	if err != nil || in != v.get(t, "signature-input") || sig != v.get(t, "signature") {
		t.Fatalf("Sign = %s / %s, %v", in, sig, err)
	}
	if ks := id.String(); ks != v.get(t, "keyid") {
		t.Fatalf("KeyID.String = %s", ks)
	}
	// Independent: a verifier that shares no code with this package accepts the signature, and
	// the base it builds is the vector's.
	checkRefSignature(t, v, signKey[:], Label)
}

func scalarEphemeral(t testing.TB, scalar []byte) *Ephemeral {
	t.Helper()
	e, err := NewEphemeral(bytes.NewReader(scalar))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func eq(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %x, want %x", what, got, want)
	}
}

func runHandshakeVector(t *testing.T, v *vector) {
	lane := LaneID(v.hex(t, "lane"))
	kind := HandshakeLogin
	if v.get(t, "handshake") == "join" {
		kind = HandshakeJoin
	}
	cs := v.hex(t, "client-scalar")
	client := scalarEphemeral(t, cs)
	if v.get(t, "expect") != "ok" {
		// A failing handshake names the peer key that the client side must refuse.
		sp := [32]byte(v.hex(t, "server-public"))
		_, err := Handshake(client, sp, [32]byte{}, lane)
		expectClass(t, v, err)
		if _, err := refX25519(cs, sp[:]); err == nil {
			t.Fatal("crypto/ecdh accepts the key the vector refuses")
		}
		return
	}
	ss := v.hex(t, "server-scalar")
	server := scalarEphemeral(t, ss)
	cp, sp := client.Public(), server.Public()
	eq(t, "client-public", cp[:], v.hex(t, "client-public"))
	eq(t, "server-public", sp[:], v.hex(t, "server-public"))
	ticket := v.hex(t, "ticket")
	tr := HandshakeTranscript(kind, cp, sp, lane, ticket)
	eq(t, "transcript", tr[:], v.hex(t, "transcript"))
	kc, err := Handshake(client, sp, tr, lane)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := Handshake(server, cp, tr, lane)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "epoch-key (client side)", kc[:], v.hex(t, "epoch-key"))
	eq(t, "epoch-key (server side)", ks[:], v.hex(t, "epoch-key"))
	checkSubKeys(t, v, &kc, tr)
	if !scalarWiped(client) || !scalarWiped(server) {
		t.Fatal("Handshake did not wipe the ephemeral scalars")
	}

	// Independent recomputation.
	eq(t, "ref client-public", refX25519Public(t, cs), v.hex(t, "client-public"))
	eq(t, "ref server-public", refX25519Public(t, ss), v.hex(t, "server-public"))
	shared, err := refX25519(cs, sp[:])
	if err != nil {
		t.Fatal(err)
	}
	shared2, _ := refX25519(ss, cp[:])
	eq(t, "ref shared-secret (both sides)", shared, shared2)
	eq(t, "ref shared-secret", shared, v.hex(t, "shared-secret"))
	var refTr []byte
	if kind == HandshakeJoin {
		refTr = refJoinTranscript(cp[:], sp[:], lane[:], ticket)
	} else {
		refTr = refLoginTranscript(cp[:], sp[:], lane[:])
	}
	eq(t, "ref transcript", refTr, v.hex(t, "transcript"))
	eq(t, "ref epoch-key", refEpochKey(shared, refTr, lane[:], 0), v.hex(t, "epoch-key"))
	checkRefSubKeys(t, v, refTr)
	if v.name == "handshake-login.txt" {
		// RFC 7748 section 6.1: the scalars are Alice's and Bob's.
		eq(t, "RFC 7748 Alice public", cp[:], mustHex(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
		eq(t, "RFC 7748 Bob public", sp[:], mustHex(t, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
		eq(t, "RFC 7748 shared K", shared, mustHex(t, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"))
	}
}

// checkSubKeys checks sign-key, event-key, chain-key and confirm with the package.
func checkSubKeys(t *testing.T, v *vector, k *Key, tr [32]byte) {
	t.Helper()
	sk, ek, ck := SignKey(k), EventKey(k), deriveSub(k, labelChain)
	eq(t, "sign-key", sk[:], v.hex(t, "sign-key"))
	eq(t, "event-key", ek[:], v.hex(t, "event-key"))
	eq(t, "chain-key", ck[:], v.hex(t, "chain-key"))
	c := Confirm(k, tr)
	eq(t, "confirm", c[:], v.hex(t, "confirm"))
	if err := CheckConfirm(k, tr, v.hex(t, "confirm")); err != nil {
		t.Fatal(err)
	}
	bad := v.hex(t, "confirm")
	bad[0] ^= 1
	if err := CheckConfirm(k, tr, bad); ErrorClass(err) != "bad_signature" {
		t.Fatalf("altered confirm: %v", err)
	}
}

// checkRefSubKeys recomputes the sub-keys from the vector's epoch key with the reference HKDF.
func checkRefSubKeys(t *testing.T, v *vector, tr []byte) {
	t.Helper()
	k := v.hex(t, "epoch-key")
	eq(t, "ref sign-key", refSub(k, refLabelSign), v.hex(t, "sign-key"))
	eq(t, "ref event-key", refSub(k, refLabelEvent), v.hex(t, "event-key"))
	eq(t, "ref chain-key", refSub(k, refLabelChain), v.hex(t, "chain-key"))
	eq(t, "ref confirm", refHMAC(refSub(k, refLabelConfirm), tr), v.hex(t, "confirm"))
}

func runRotateVector(t *testing.T, v *vector) {
	lane := LaneID(v.hex(t, "lane"))
	prev := Key(v.hex(t, "prev-epoch-key"))
	epoch := uint32(v.uint(t, "new-epoch"))
	cs := v.hex(t, "client-scalar")
	client := scalarEphemeral(t, cs)
	cp := client.Public()
	if v.get(t, "expect") != "ok" {
		sp := [32]byte(v.hex(t, "server-public"))
		_, err := Ratchet(&prev, client, sp, RotateTranscript(lane, epoch, cp, sp), lane, epoch)
		expectClass(t, v, err)
		if _, err := refX25519(cs, sp[:]); err == nil {
			t.Fatal("crypto/ecdh accepts the key the vector refuses")
		}
		return
	}
	ss := v.hex(t, "server-scalar")
	server := scalarEphemeral(t, ss)
	sp := server.Public()
	eq(t, "client-public", cp[:], v.hex(t, "client-public"))
	eq(t, "server-public", sp[:], v.hex(t, "server-public"))
	tr := RotateTranscript(lane, epoch, cp, sp)
	eq(t, "transcript", tr[:], v.hex(t, "transcript"))
	kc, err := Ratchet(&prev, client, sp, tr, lane, epoch)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := Ratchet(&prev, server, cp, tr, lane, epoch)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "epoch-key (client side)", kc[:], v.hex(t, "epoch-key"))
	eq(t, "epoch-key (server side)", ks[:], v.hex(t, "epoch-key"))
	pc := deriveSub(&prev, labelChain)
	eq(t, "prev-chain-key", pc[:], v.hex(t, "prev-chain-key"))
	checkSubKeys(t, v, &kc, tr)

	eq(t, "ref client-public", refX25519Public(t, cs), cp[:])
	eq(t, "ref server-public", refX25519Public(t, ss), sp[:])
	shared, err := refX25519(ss, cp[:])
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "ref shared-secret", shared, v.hex(t, "shared-secret"))
	refTr := refRotateTranscript(lane[:], epoch, cp[:], sp[:])
	eq(t, "ref transcript", refTr, v.hex(t, "transcript"))
	chain := refSub(prev[:], refLabelChain)
	eq(t, "ref prev-chain-key", chain, v.hex(t, "prev-chain-key"))
	eq(t, "ref epoch-key", refEpochKey(append(shared, refTr...), chain, lane[:], epoch), v.hex(t, "epoch-key"))
	checkRefSubKeys(t, v, refTr)
}

var eventTypes = map[string]EventType{"revoked": EventRevoked, "rotate": EventRotate, "expiring": EventExpiring, "expired": EventExpired}

func runEventVector(t *testing.T, v *vector) {
	ek := Key(v.hex(t, "event-key"))
	sealed := v.hex(t, "sealed")
	e, err := OpenEvent(&ek, sealed)
	expectClass(t, v, err)
	if v.has("epoch-key") {
		k := Key(v.hex(t, "epoch-key"))
		ek2 := EventKey(&k)
		eq(t, "EventKey(epoch-key)", ek2[:], ek[:])
		eq(t, "ref EventKey(epoch-key)", refSub(k[:], refLabelEvent), ek[:])
	}
	if v.get(t, "expect") != "ok" {
		return
	}
	typ, ok := eventTypes[v.get(t, "type")]
	if !ok {
		t.Fatalf("unknown type %q", v.get(t, "type"))
	}
	want := Event{
		Type: typ, Lane: LaneID(v.hex(t, "lane")), Epoch: uint32(v.uint(t, "epoch")), Seq: v.uint(t, "seq"),
		Time: v.int(t, "time"), Deadline: v.int(t, "deadline"), Reason: v.get(t, "reason"),
	}
	if e != want {
		t.Fatalf("OpenEvent = %+v, want %+v", e, want)
	}
	if typ.String() != v.get(t, "type") {
		t.Fatalf("String = %s", typ)
	}
	b, err := SealEvent(&ek, &want)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "SealEvent", b, sealed)
	ref := refSealEvent(ek[:], byte(typ), want.Lane[:], want.Epoch, want.Seq, want.Time, want.Deadline, want.Reason)
	eq(t, "ref sealed", ref, sealed)
}

func runSocketAuthVector(t *testing.T, v *vector) {
	sk := Key(v.hex(t, "sign-key"))
	lane := v.hex(t, "lane")
	epoch := uint32(v.uint(t, "epoch"))
	ch := v.hex(t, "challenge")
	got := SocketAuth(&sk, LaneID(lane), epoch, ch)
	expectClass(t, v, nil)
	eq(t, "tag", got[:], v.hex(t, "tag"))
	eq(t, "ref tag", refHMAC(sk[:], []byte(refLabelSocket), []byte{0}, lane, refU32(epoch), ch), v.hex(t, "tag"))
	if v.has("keyid") {
		if id := (KeyID{Lane: LaneID(lane), Epoch: epoch}).String(); id != v.get(t, "keyid") {
			t.Fatalf("keyid = %s", id)
		}
	}
}

func runABIVector(t *testing.T, v *vector) {
	msg := v.hex(t, "message")
	m, err := DecodeMessage(msg)
	expectClass(t, v, err)
	if v.get(t, "expect") != "ok" {
		return
	}
	if uint64(m.Code) != v.uint(t, "code") {
		t.Fatalf("code %d", m.Code)
	}
	fields := v.all("field")
	if len(fields) != len(m.Fields) {
		t.Fatalf("%d fields, vector has %d", len(m.Fields), len(fields))
	}
	// Independent re-encoding with encoding/binary from the vector's decoded fields.
	ref := []byte{1, byte(v.uint(t, "code"))}
	for i, f := range fields {
		tagS, valS, _ := strings.Cut(f, " ")
		tag, err := strconv.ParseUint(tagS, 10, 8)
		if err != nil {
			t.Fatal(err)
		}
		val := mustHex(t, valS)
		if m.Fields[i].Tag != byte(tag) || !bytes.Equal(m.Fields[i].Value, val) {
			t.Fatalf("field %d = %d %x, want %s", i, m.Fields[i].Tag, m.Fields[i].Value, f)
		}
		ref = append(ref, byte(tag))
		ref = binary.AppendUvarint(ref, uint64(len(val)))
		ref = append(ref, val...)
	}
	eq(t, "encoding/binary re-encoding", ref, msg)
	eq(t, "Append", m.Append(nil), msg)
	for _, u := range v.all("uint") {
		tagS, nS, _ := strings.Cut(u, " ")
		tag, _ := strconv.ParseUint(tagS, 10, 8)
		want, _ := strconv.ParseUint(nS, 10, 64)
		n, ok, err := m.Uint(byte(tag))
		if !ok || err != nil || n != want {
			t.Fatalf("Uint(%d) = %d, %v, %v", tag, n, ok, err)
		}
		val, _ := m.Get(byte(tag))
		if rn, w := binary.Uvarint(val); w != len(val) || rn != want {
			t.Fatalf("encoding/binary reads field %d as %d", tag, rn)
		}
	}
	for _, l := range v.all("list") {
		parts := strings.Fields(l)
		tag, _ := strconv.ParseUint(parts[0], 10, 8)
		val, _ := m.Get(byte(tag))
		items, err := SplitList(val, 64)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		var ref []byte
		for _, h := range parts[1:] {
			want = append(want, string(mustHex(t, h)))
			ref = binary.AppendUvarint(ref, uint64(len(h)/2))
			ref = append(ref, mustHex(t, h)...)
		}
		if !slices.Equal(items, want) {
			t.Fatalf("SplitList = %q, want %q", items, want)
		}
		eq(t, "list re-encoding", ref, val)
		eq(t, "AppendList", AppendList(nil, items), val)
	}
}
