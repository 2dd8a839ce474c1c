//go:build !wasm

package main

// Every vector of internal/protocol/testdata that the worker ABI can drive runs through the
// module (and its native twin): handshakes with the vectors' scalars fed through random_get,
// rotations chained onto them, signatures made at the vectors' created time and nonce, events
// opened, socket authentication. The rest (verification-only vectors, RFC 9421's own example)
// are listed with the reason they cannot be driven.

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
)

var vectorDir = filepath.Join("..", "..", "internal", "protocol", "testdata")

// vec is one vector file: "key: value" header lines, then optionally a blank line and a payload
// running to the end of the file (testdata/README.md).
type vec struct {
	name       string
	h          [][2]string
	payload    []byte
	hasPayload bool
}

func parseVec(name string, data []byte) (*vec, error) {
	v := &vec{name: name}
	head := data
	if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
		head, v.payload, v.hasPayload = data[:i+1], data[i+2:], true
	}
	for _, line := range strings.SplitAfter(string(head), "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			return nil, os.ErrInvalid
		}
		k, val, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
		if !ok || k == "" {
			return nil, os.ErrInvalid
		}
		v.h = append(v.h, [2]string{k, strings.TrimPrefix(val, " ")})
	}
	return v, nil
}

func (v *vec) get(k string) string {
	for _, kv := range v.h {
		if kv[0] == k {
			return kv[1]
		}
	}
	return ""
}

func (v *vec) has(k string) bool {
	for _, kv := range v.h {
		if kv[0] == k {
			return true
		}
	}
	return false
}

func (v *vec) hex(t testing.TB, k string) []byte {
	t.Helper()
	b, err := hex.DecodeString(v.get(k))
	if err != nil {
		t.Fatalf("%s: %s: %v", v.name, k, err)
	}
	return b
}

func (v *vec) hex32(t testing.TB, k string) (out [32]byte) {
	t.Helper()
	b := v.hex(t, k)
	if len(b) != 32 {
		t.Fatalf("%s: %s is %d bytes", v.name, k, len(b))
	}
	copy(out[:], b)
	return out
}

func (v *vec) uint(t testing.TB, k string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(v.get(k), 10, 64)
	if err != nil {
		t.Fatalf("%s: %s: %v", v.name, k, err)
	}
	return n
}

func loadVecs(t *testing.T) []*vec {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(vectorDir, "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("no vectors in %s (internal/protocol/testdata/*.txt): the wazero tests run every vector through the module", vectorDir)
	}
	var out []*vec
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := parseVec(filepath.Base(name), data)
		if err != nil {
			t.Fatalf("%s: bad vector file", name)
		}
		if v.get("kind") == "" || v.get("expect") == "" {
			t.Fatalf("%s: no kind or expect line", name)
		}
		out = append(out, v)
	}
	return out
}

// keyChain is the handshake vector and the rotation vectors that lead to one epoch key.
type keyChain []*vec

// chains indexes every reachable epoch by its sign and event keys (hex).
type chains struct {
	bySign, byEvent map[string]keyChain
}

func buildChains(t *testing.T, vs []*vec) chains {
	c := chains{bySign: map[string]keyChain{}, byEvent: map[string]keyChain{}}
	byEpochKey := map[string]keyChain{}
	for _, v := range vs {
		if v.get("kind") == "handshake" && v.get("expect") == "ok" && v.has("epoch-key") {
			byEpochKey[v.get("epoch-key")] = keyChain{v}
		}
	}
	// Rotations chain onto whatever holds their previous key; repeat until nothing new.
	for changed := true; changed; {
		changed = false
		for _, v := range vs {
			if v.get("kind") != "rotate" || v.get("expect") != "ok" || !v.has("epoch-key") {
				continue
			}
			if _, done := byEpochKey[v.get("epoch-key")]; done {
				continue
			}
			if parent, ok := byEpochKey[v.get("prev-epoch-key")]; ok {
				byEpochKey[v.get("epoch-key")] = append(append(keyChain(nil), parent...), v)
				changed = true
			}
		}
	}
	for _, ch := range byEpochKey {
		last := ch[len(ch)-1]
		c.bySign[last.get("sign-key")] = ch
		c.byEvent[last.get("event-key")] = ch
	}
	return c
}

func (ch keyChain) lane(t testing.TB) protocol.LaneID {
	var l protocol.LaneID
	copy(l[:], ch[0].hex(t, "lane"))
	return l
}

func (ch keyChain) epoch(t testing.TB) uint32 {
	if len(ch) == 1 {
		return 0
	}
	return uint32(ch[len(ch)-1].uint(t, "new-epoch"))
}

// scalars are the client scalars the chain's handshake and rotations draw, in order.
func (ch keyChain) scalars(t testing.TB) []byte {
	var b []byte
	for _, v := range ch {
		b = append(b, v.hex(t, "client-scalar")...)
	}
	return b
}

// newFixedPair is a wasm instance and a native vault that draw exactly rnd.
func newFixedPair(t testing.TB, rnd []byte, clock *fakeClock) *pair {
	t.Helper()
	in, err := getHost(t).instantiateWith(99, bytes.NewReader(rnd), clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	nr := &countingReader{r: bytes.NewReader(rnd)}
	return &pair{t: t, wasm: in, native: vault.New(nr, clock.Now), nrand: nr, clock: clock, codes: map[string]int{}}
}

// handshakeKind maps a vector's "handshake:" line to the ABI kind.
func handshakeKind(t testing.TB, v *vec) int {
	switch v.get("handshake") {
	case "login", "":
		return protocol.HandshakeLogin
	case "join":
		return protocol.HandshakeJoin
	case "rekey":
		return protocol.HandshakeRekey
	}
	t.Fatalf("%s: unknown handshake %q", v.name, v.get("handshake"))
	return 0
}

// beginStep runs begin (or rotate_begin) and checks the public key against the vector.
func beginStep(t testing.TB, p *pair, v *vec, q []byte) {
	t.Helper()
	r := p.do(v.name+" begin", q)
	if r.Code != 0 {
		t.Fatalf("%s: begin: %s %q", v.name, r.code(), r.str(1))
	}
	if v.has("client-public") {
		pub, _ := r.Get(1)
		if want := v.hex(t, "client-public"); !bytes.Equal(pub, want) {
			t.Fatalf("%s: the module's public key is %x, the vector's %x", v.name, pub, want)
		}
	}
}

func finishReq(t testing.TB, v *vec, serverTimeMs int64) []byte {
	t.Helper()
	confirm := make([]byte, 32)
	if v.has("confirm") {
		confirm = v.hex(t, "confirm")
	}
	fields := []field{f(1, v.hex(t, "lane")), f(2, v.hex(t, "server-public")), f(3, confirm), fu(4, uint64(serverTimeMs))}
	if v.has("ticket") {
		fields = append(fields, f(6, v.hex(t, "ticket")))
	}
	return req(vault.OpFinish, fields...)
}

func rotateFinishReq(t testing.TB, v *vec) []byte {
	t.Helper()
	confirm := make([]byte, 32)
	if v.has("confirm") {
		confirm = v.hex(t, "confirm")
	}
	return req(vault.OpRotateFinish, f(1, v.hex(t, "server-public")), fu(2, v.uint(t, "new-epoch")), f(3, confirm))
}

// drive brings a fresh pair along the chain: policy, handshake, rotations. serverTimeMs is the
// server time given at the handshake (it sets `created` of later signatures).
func drive(t testing.TB, ch keyChain, pol []field, serverTimeMs int64, extraRand []byte) *pair {
	t.Helper()
	p := newFixedPair(t, append(ch.scalars(t), extraRand...), newFakeClock(time.UnixMilli(1_800_000_000_000)))
	if r := p.do("policy", req(vault.OpPolicy, pol...)); r.Code != 0 {
		t.Fatalf("policy: %s %q", r.code(), r.str(1))
	}
	hs := ch[0]
	beginStep(t, p, hs, req(vault.OpBegin, fu(1, uint64(handshakeKind(t, hs)))))
	if r := p.do(hs.name+" finish", finishReq(t, hs, serverTimeMs)); r.Code != 0 {
		t.Fatalf("%s: finish: %s %q", hs.name, r.code(), r.str(1))
	}
	for _, rv := range ch[1:] {
		beginStep(t, p, rv, req(vault.OpRotateBegin))
		r := p.do(rv.name+" rotate_finish", rotateFinishReq(t, rv))
		if r.Code != 0 {
			t.Fatalf("%s: rotate_finish: %s %q", rv.name, r.code(), r.str(1))
		}
		if r.uint(t, 2) != rv.uint(t, "new-epoch") {
			t.Fatalf("%s: epoch %d after rotation", rv.name, r.uint(t, 2))
		}
	}
	return p
}

var defaultPolicy = []field{fs(1, "https://app.example")}

// checkKeys proves that the module holds the chain's keys: a signature verifies under the
// vector's sign key, socket auth matches, and an event sealed under its event key is accepted.
func checkKeys(t testing.TB, p *pair, last *vec, lane protocol.LaneID, epoch uint32) {
	t.Helper()
	var signKey, eventKey protocol.Key
	copy(signKey[:], last.hex(t, "sign-key"))
	copy(eventKey[:], last.hex(t, "event-key"))
	r := p.do("sign", req(vault.OpSign, fs(1, "POST"), fs(2, "https://app.example"), fs(3, "/api/x"), fs(5, "{}")))
	if r.Code != 0 {
		t.Fatalf("%s: sign: %s", last.name, r.code())
	}
	s, err := protocol.ParseSigned(r.str(1), r.str(2))
	if err != nil {
		t.Fatal(err)
	}
	rq := protocol.Request{Method: "POST", Authority: "app.example", Path: "/api/x", ContentDigest: r.str(3)}
	if err := protocol.NewVerifier(&signKey).Verify(s, &rq); err != nil {
		t.Fatalf("%s: the module's signature does not verify under the vector's sign key: %v", last.name, err)
	}
	if s.KeyID != (protocol.KeyID{Lane: lane, Epoch: epoch}) {
		t.Fatalf("%s: keyid %v", last.name, s.KeyID)
	}
	ch := []byte("a socket challenge of 32 bytes..")
	r = p.do("socket_auth", req(vault.OpSocketAuth, f(1, ch)))
	tag, _ := r.Get(2)
	if want := protocol.SocketAuth(&signKey, lane, epoch, ch); r.Code != 0 || !bytes.Equal(tag, want[:]) {
		t.Fatalf("%s: socket auth %x, want %x", last.name, tag, want)
	}
	ev := protocol.Event{Type: protocol.EventExpiring, Lane: lane, Epoch: epoch, Seq: 1 << 40, Deadline: 1}
	sealed, _ := protocol.SealEvent(&eventKey, &ev)
	if r := p.do("event", req(vault.OpEvent, f(1, sealed))); r.Code != 0 {
		t.Fatalf("%s: an event under the vector's event key: %s", last.name, r.code())
	}
}

// TestVectors runs every vector the ABI can drive through the module.
func TestVectors(t *testing.T) {
	vs := loadVecs(t)
	c := buildChains(t, vs)
	ran, skipped := map[string]int{}, map[string][]string{}
	skip := func(v *vec, why string) { skipped[why] = append(skipped[why], v.name) }
	for _, v := range vs {
		kind, expect := v.get("kind"), v.get("expect")
		t.Run(strings.TrimSuffix(v.name, ".txt"), func(t *testing.T) {
			var done bool
			switch kind {
			case "handshake":
				done = runHandshakeVector(t, v)
			case "rotate":
				done = runRotateVector(t, v, c, skip)
			case "sign":
				done = runSignVector(t, v, c, skip)
			case "event":
				done = runEventVector(t, v, c, skip)
			case "socket-auth":
				done = runSocketVector(t, v, c, skip)
			case "abi":
				done = runABIVector(t, v)
			case "rfc9421":
				skip(v, "RFC 9421's own example: verification with other components and keys, which the worker does not do")
			default:
				t.Errorf("vector kind %q is new to wasm/worker/vectors_test.go: drive it through the module or list why it cannot be", kind)
			}
			if done {
				ran[kind+"/"+expect]++
			}
		})
	}
	t.Logf("driven through the module: %v", ran)
	var whys []string
	for why := range skipped {
		whys = append(whys, why)
	}
	sort.Strings(whys)
	for _, why := range whys {
		t.Logf("not drivable (%d), %s: %s", len(skipped[why]), why, strings.Join(skipped[why], " "))
	}
	for _, k := range []string{"handshake/ok", "rotate/ok", "sign/ok", "event/ok", "abi/ok"} {
		if ran[k] == 0 {
			t.Errorf("no %s vector ran through the module", k)
		}
	}
}

func runHandshakeVector(t *testing.T, v *vec) bool {
	ch := keyChain{v}
	switch v.get("expect") {
	case "ok":
		p := drive(t, ch, defaultPolicy, 1_700_000_000_000, nil)
		checkKeys(t, p, v, ch.lane(t), 0)
	case "key_agreement":
		p := newFixedPair(t, v.hex(t, "client-scalar"), newFakeClock(time.UnixMilli(1_800_000_000_000)))
		p.do("policy", req(vault.OpPolicy, defaultPolicy...))
		beginStep(t, p, v, req(vault.OpBegin, fu(1, uint64(handshakeKind(t, v)))))
		r := p.do(v.name+" finish", finishReq(t, v, 1_700_000_000_000))
		if r.code() != vault.CodeBadInput {
			t.Fatalf("low-order server key: got %q (%q), want bad_input", r.code(), r.str(1))
		}
		if st := p.state(); st != vault.StateEmpty {
			t.Fatalf("state %v after a refused key, want empty", st)
		}
	default:
		t.Fatalf("handshake vector with expect %q", v.get("expect"))
	}
	return true
}

func runRotateVector(t *testing.T, v *vec, c chains, skip func(*vec, string)) bool {
	switch v.get("expect") {
	case "ok":
		ch := c.byEvent[v.get("event-key")]
		if ch == nil {
			skip(v, "no handshake vector leads to its previous key")
			return false
		}
		p := drive(t, ch, defaultPolicy, 1_700_000_000_000, nil)
		checkKeys(t, p, v, ch.lane(t), ch.epoch(t))
	case "key_agreement":
		var parent keyChain
		for _, ch := range c.byEvent {
			last := ch[len(ch)-1]
			if last.get("epoch-key") == v.get("prev-epoch-key") {
				parent = ch
			}
		}
		if parent == nil {
			skip(v, "no handshake vector leads to its previous key")
			return false
		}
		p := drive(t, parent, defaultPolicy, 1_700_000_000_000, v.hex(t, "client-scalar"))
		beginStep(t, p, v, req(vault.OpRotateBegin))
		r := p.do(v.name+" rotate_finish", rotateFinishReq(t, v))
		if r.code() != vault.CodeBadInput {
			t.Fatalf("low-order rotation key: got %q (%q), want bad_input", r.code(), r.str(1))
		}
		checkKeys(t, p, parent[len(parent)-1], parent.lane(t), parent.epoch(t)) // still on the old epoch
	default:
		t.Fatalf("rotate vector with expect %q", v.get("expect"))
	}
	return true
}

func runSignVector(t *testing.T, v *vec, c chains, skip func(*vec, string)) bool {
	if v.get("expect") != "ok" {
		skip(v, "a verification failure (the worker only signs; internal/protocol and the server check these)")
		return false
	}
	ch := c.bySign[v.get("sign-key")]
	if ch == nil {
		skip(v, "no handshake or rotation vector derives its sign key")
		return false
	}
	id, err := protocol.ParseKeyID(v.get("keyid"))
	if err != nil || id.Lane != ch.lane(t) || id.Epoch != ch.epoch(t) {
		skip(v, "its keyid names an epoch no vector chain reaches")
		return false
	}
	nonce, created := v.uint(t, "nonce"), v.uint(t, "created")
	if nonce > 1000 || created*1000 > 1<<53 {
		skip(v, "nonce or created out of a live worker's reach")
		return false
	}
	path := v.get("path")
	if path == "" {
		path = "/" // "@path" of an empty path is "/": the worker signs the same base
	}
	if !strings.HasPrefix(path, "/") {
		skip(v, "a path the worker never signs (the page always sends an absolute path)")
		return false
	}
	origin := "https://" + v.get("authority")
	method := v.get("method")
	p := drive(t, ch, []field{fs(1, origin), fl(4, []string{method})}, int64(created)*1000, nil)
	fields := []field{fs(1, method), fs(2, origin), fs(3, path), fs(4, v.get("query"))}
	if v.has("content-digest") {
		fields = append(fields, f(5, v.payload))
	}
	q := req(vault.OpSign, fields...)
	var r reply
	for range nonce {
		r = p.do("sign", q)
		if r.Code != 0 {
			if r.code() == vault.CodePolicyDenied {
				skip(v, "a request outside every policy ("+r.str(1)+")")
				return false
			}
			t.Fatalf("sign: %s %q", r.code(), r.str(1))
		}
	}
	// The worker writes only its own member; a vector whose fields carry other members too
	// (other signatures on the same request) must contain the worker's member as one of them.
	member := func(got, want string) bool {
		return got == want || strings.Contains(", "+want+", ", ", "+got+", ")
	}
	if got, want := r.str(1), v.get("signature-input"); !member(got, want) {
		t.Errorf("Signature-Input\n got %s\nwant %s", got, want)
	}
	if got, want := r.str(2), v.get("signature"); !member(got, want) {
		t.Errorf("Signature\n got %s\nwant %s", got, want)
	}
	if got, want := r.str(3), v.get("content-digest"); got != want {
		t.Errorf("Content-Digest\n got %s\nwant %s", got, want)
	}
	return true
}

// eventCodes is how the worker reports an event the protocol package refuses.
var eventCodes = map[string]string{"ok": "", "malformed": vault.CodeBadEvent, "too_large": vault.CodeBadEvent, "bad_signature": vault.CodeBadEvent}

func runEventVector(t *testing.T, v *vec, c chains, skip func(*vec, string)) bool {
	want, ok := eventCodes[v.get("expect")]
	if !ok {
		t.Fatalf("event vector with expect %q", v.get("expect"))
	}
	sealed := v.hex(t, "sealed")
	ch := c.byEvent[v.get("event-key")]
	if ch == nil {
		if v.get("expect") == "bad_signature" {
			skip(v, "a wrong-key check: the worker chooses the key by the event's own epoch, so this is a test of OpenEvent only")
		} else {
			skip(v, "no handshake or rotation vector derives its event key")
		}
		return false
	}
	// The worker picks the key by the event's lane and epoch; the vector is a test of the
	// worker only when that choice is the vector's key.
	parsedEpoch := func() (protocol.LaneID, uint32, bool) {
		var l protocol.LaneID
		if len(sealed) < 22 {
			return l, 0, false
		}
		copy(l[:], sealed[2:18])
		return l, uint32(sealed[18])<<24 | uint32(sealed[19])<<16 | uint32(sealed[20])<<8 | uint32(sealed[21]), true
	}
	lane, epoch, parsed := parsedEpoch()
	if want == vault.CodeBadEvent && v.get("expect") == "bad_signature" && (!parsed || lane != ch.lane(t) || epoch != ch.epoch(t)) {
		skip(v, "a wrong-key check: the worker chooses the key by the event's own epoch, so this is a test of OpenEvent only")
		return false
	}
	p := drive(t, ch, defaultPolicy, 1_700_000_000_000, nil)
	r := p.do(v.name, req(vault.OpEvent, f(1, sealed)))
	if r.code() != want {
		t.Fatalf("got %q (%q), want %q", r.code(), r.str(1), want)
	}
	if want != "" {
		checkKeys(t, p, ch[len(ch)-1], ch.lane(t), ch.epoch(t)) // a refused event changes nothing
		return true
	}
	types := map[string]protocol.EventType{"revoked": protocol.EventRevoked, "rotate": protocol.EventRotate, "expiring": protocol.EventExpiring, "expired": protocol.EventExpired}
	typ := types[v.get("type")]
	if r.uint(t, 1) != uint64(typ) || r.str(2) != v.get("reason") {
		t.Fatalf("reply %x: type %d reason %q", r.raw, r.uint(t, 1), r.str(2))
	}
	deadline, _ := strconv.ParseInt(v.get("deadline"), 10, 64)
	if d, has, _ := r.Uint(3); has != (deadline > 0) || has && d != uint64(deadline) {
		t.Fatalf("reply deadline %d (present %v), vector %d", d, has, deadline)
	}
	wantState := vault.StateActive
	if typ == protocol.EventRevoked || typ == protocol.EventExpired {
		wantState = vault.StateWiped
	}
	if vault.State(r.uint(t, 4)) != wantState {
		t.Fatalf("state %d after %s, want %v", r.uint(t, 4), v.get("type"), wantState)
	}
	if wantState == vault.StateWiped {
		checkCode(t, vault.CodeNoSession, p.do("sign after wipe", okSign).raw)
	}
	return true
}

func runSocketVector(t *testing.T, v *vec, c chains, skip func(*vec, string)) bool {
	if v.get("expect") != "ok" {
		skip(v, "a verification failure")
		return false
	}
	ch := c.bySign[v.get("sign-key")]
	if ch == nil || ch.epoch(t) != uint32(v.uint(t, "epoch")) {
		skip(v, "no handshake or rotation vector derives its sign key")
		return false
	}
	p := drive(t, ch, defaultPolicy, 1_700_000_000_000, nil)
	r := p.do("socket_auth", req(vault.OpSocketAuth, f(1, v.hex(t, "challenge"))))
	if r.Code != 0 {
		t.Fatalf("socket auth: %s", r.code())
	}
	tag, _ := r.Get(2)
	if r.str(1) != v.get("keyid") || !bytes.Equal(tag, v.hex(t, "tag")) {
		t.Fatalf("socket auth: keyid %q tag %x, vector %q %s", r.str(1), tag, v.get("keyid"), v.get("tag"))
	}
	return true
}

// runABIVector sends the vector's message to a fresh module: a malformed message gets
// bad_message, a too-large one too_large, and a well-formed one is decoded (whatever the
// operation then says in a vault with no policy).
func runABIVector(t *testing.T, v *vec) bool {
	p := newPair(t, 77)
	msg := v.hex(t, "message")
	r := p.do(v.name, msg)
	switch v.get("expect") {
	case "ok":
		if r.code() == vault.CodeBadMessage || r.code() == vault.CodeInternal {
			t.Fatalf("well-formed message answered %q (%q)", r.code(), r.str(1))
		}
		if v.has("code") && int(v.uint(t, "code")) != int(msg[1]) {
			t.Fatalf("vector code %s, message code %d", v.get("code"), msg[1])
		}
	case "malformed":
		checkCode(t, vault.CodeBadMessage, r.raw)
	case "too_large":
		checkCode(t, vault.CodeTooLarge, r.raw)
	default:
		t.Fatalf("abi vector with expect %q", v.get("expect"))
	}
	stillWorks(t, p.wasm, false)
	return true
}
