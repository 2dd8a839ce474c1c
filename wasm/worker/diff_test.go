//go:build !wasm

package main

// Differential tests: the built module and the native vault, given the same randomness and the
// same clock, answer the same ABI requests with the same bytes; and a server side built natively
// from internal/protocol (crypto/ecdh X25519) agrees on every key the wasm derives (its compact
// X25519): the signatures the module makes verify natively.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
)

// countingReader counts what the native vault draws.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// lowOrder are X25519 points whose product with any clamped scalar is zero (RFC 7748 section 6.1
// says to refuse them), plus non-canonical encodings of them.
var lowOrder = func() [][32]byte {
	var out [][32]byte
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p-1
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p+1
		"0000000000000000000000000000000000000000000000000000000000000080", // 0 with the top bit
		"cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
		"4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
	} {
		var p [32]byte
		hex.Decode(p[:], []byte(h))
		out = append(out, p)
	}
	return out
}()

// session is the server's view of one lane, built natively.
type session struct {
	lane      protocol.LaneID
	epoch     uint32
	key       protocol.Key
	signKey   protocol.Key
	eventKey  protocol.Key
	prevEvent protocol.Key
	prevUntil time.Time
	hasPrev   bool
	eventSeq  uint64
	nonce     uint64
	offsetMs  int64
	expiresMs int64
}

func newSession(k protocol.Key, lane protocol.LaneID) *session {
	return &session{lane: lane, key: k, signKey: protocol.SignKey(&k), eventKey: protocol.EventKey(&k)}
}

// pair drives one wasm instance and its native twin with the same requests.
type pair struct {
	t       testing.TB
	wasm    *instance
	native  *vault.Vault
	nrand   *countingReader
	clock   *fakeClock
	rng     *rand.Rand
	srv     *rand.ChaCha8 // the server's randomness
	mirror  *rand.ChaCha8 // the same stream as the vault's, to know the client's scalars
	mirrorN int           // bytes read from mirror

	skipUnmodelled bool
	wrapAccepted   int

	policy   vault.Policy
	bound    bool
	pending  *[32]byte // client scalar of the pending handshake (from the mirror)
	pendPub  [32]byte
	kind     int
	rotating *[32]byte // client scalar of the pending rotation
	rotPub   [32]byte
	sess     *session

	ops, oks  int
	signs     int
	sessions  int
	rotations int
	events    int
	lastOp    string
	codes     map[string]int
}

func newPair(t testing.TB, seed uint64) *pair {
	clock := newFakeClock(time.UnixMilli(1_700_000_000_000 + int64(seed%1000)*86_400_000))
	nr := &countingReader{r: seededReader(seed)}
	return &pair{
		t:      t,
		wasm:   newInstance(t, seed, clock),
		native: vault.New(nr, clock.Now),
		nrand:  nr,
		clock:  clock,
		rng:    rand.New(rand.NewPCG(seed, 0x5e55)),
		srv:    rand.NewChaCha8(seedOf(seed, 's')),
		mirror: seededReader(seed),
		codes:  map[string]int{},
	}
}

// do sends q to both sides, fails on any difference, and returns the decoded reply.
func (p *pair) do(op string, q []byte) reply {
	p.t.Helper()
	p.ops++
	p.lastOp = op
	// Every other request takes the browser's path (exec through one reused buffer), the rest
	// alloc/call/free: both must give the native vault's reply.
	call := p.wasm.Call
	if p.ops%2 == 0 {
		call = p.wasm.Exec
	}
	w, err := call(q)
	if err != nil {
		p.t.Fatalf("op %d %s: %v (request %x)", p.ops, op, err, trunc(q))
	}
	n := p.native.Call(q)
	if !bytes.Equal(w, n) {
		p.t.Fatalf("op %d %s: wasm and native differ (a stale module does too: see TestWasmFresh)\nrequest %x\nwasm    %x\nnative  %x", p.ops, op, trunc(q), w, n)
	}
	r := decodeReply(p.t, w)
	p.codes[op+":"+r.code()]++
	if r.Code == 0 {
		p.oks++
	}
	return r
}

func trunc(b []byte) []byte {
	if len(b) > 256 {
		return b[:256]
	}
	return b
}

func (p *pair) fatalf(format string, args ...any) {
	p.t.Helper()
	p.t.Fatalf("op %d %s: "+format, append([]any{p.ops, p.lastOp}, args...)...)
}

func (p *pair) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(p.rng.Uint32())
	}
	return b
}

func (p *pair) nowMs() int64 { return p.clock.Now().UnixMilli() }

// takeScalar reads the next client scalar from the mirror and checks that the module's public key
// is its X25519 base-point product as crypto/ecdh computes it.
//
// The module must have drawn exactly 32 bytes per key pair since the last one, unless the test
// sent requests it does not model (skipUnmodelled), in which case the mirror catches up.
func (p *pair) takeScalar(pub []byte) *[32]byte {
	drawn := p.wasm.rand.drawn()
	if gap := drawn - 32 - p.mirrorN; gap != 0 {
		if !p.skipUnmodelled || gap < 0 {
			p.fatalf("the module drew %d random bytes, the model expected %d", drawn, p.mirrorN+32)
		}
		p.mirror.Read(make([]byte, gap))
		p.mirrorN += gap
	}
	var s [32]byte
	p.mirror.Read(s[:])
	p.mirrorN += 32
	e := p.eph(&s)
	if got := e.Public(); !bytes.Equal(got[:], pub) {
		p.fatalf("public key %x is not X25519(scalar, 9) = %x", pub, got)
	}
	return &s
}

func (p *pair) eph(s *[32]byte) *protocol.Ephemeral {
	e, err := protocol.NewEphemeral(bytes.NewReader(s[:]))
	if err != nil {
		p.fatalf("ephemeral: %v", err)
	}
	return e
}

func (p *pair) serverEph() *protocol.Ephemeral {
	e, err := protocol.NewEphemeral(p.srv)
	if err != nil {
		p.fatalf("server ephemeral: %v", err)
	}
	return e
}

// ---- operations ----

var (
	methodPool = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "QUERY", "get", "G ET", ""}
	originPool = []string{"https://app.example", "https://api.example", "https://app.example:8443", "http://localhost:8080", "https://evil.example", "https://APP.example", "app.example", ""}
	segPool    = []string{"api", "v1", "users", "x", "a-b", "%41", "~me", "item;1", "é", ".", "..", "%2e", "%2F", "a\\b", "", "q?x"} // 8 clean, then unclean
	prefixPool = []string{"/api/", "/api", "/v1/users", "/", "/x/", "/api/../x", "//x", "api"}
)

func (p *pair) opPolicy() {
	var pol vault.Policy
	pol.Self = originPool[p.rng.IntN(4)]
	if p.rng.IntN(10) == 0 {
		pol.Self = originPool[4+p.rng.IntN(len(originPool)-4)] // mostly invalid
	}
	if p.rng.IntN(2) == 0 {
		for range 1 + p.rng.IntN(3) {
			pol.Origins = append(pol.Origins, originPool[p.rng.IntN(5)])
		}
	}
	if p.rng.IntN(2) == 0 {
		for range 1 + p.rng.IntN(2) {
			pol.Prefixes = append(pol.Prefixes, prefixPool[p.rng.IntN(5)])
		}
		if p.rng.IntN(15) == 0 {
			pol.Prefixes = append(pol.Prefixes, prefixPool[p.rng.IntN(len(prefixPool))])
		}
	}
	if p.rng.IntN(3) == 0 {
		for range 1 + p.rng.IntN(4) {
			pol.Methods = append(pol.Methods, methodPool[p.rng.IntN(7)])
		}
	}
	fields := []field{fs(1, pol.Self)}
	if pol.Origins != nil {
		fields = append(fields, fl(2, pol.Origins))
	}
	if pol.Prefixes != nil {
		fields = append(fields, fl(3, pol.Prefixes))
	}
	if pol.Methods != nil {
		fields = append(fields, fl(4, pol.Methods))
	}
	r := p.do("policy", req(vault.OpPolicy, fields...))
	switch {
	case r.Code == 0:
		if p.bound {
			p.fatalf("policy bound twice")
		}
		p.bound = true
		if len(pol.Origins) == 0 {
			pol.Origins = []string{pol.Self}
		}
		if len(pol.Methods) == 0 {
			pol.Methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
		}
		p.policy = pol
	case p.bound && r.code() != vault.CodePolicyBound:
		p.fatalf("second policy: %s", r.code())
	}
}

func (p *pair) opBegin() {
	kind := 1 + p.rng.IntN(3)
	if p.rng.IntN(25) == 0 {
		kind = []int{0, 4, 255, 1 << 20}[p.rng.IntN(4)]
	}
	r := p.do("begin", req(vault.OpBegin, fu(1, uint64(kind))))
	if r.Code != 0 {
		return
	}
	pub, _ := r.Get(1)
	s := p.takeScalar(pub)
	p.pending, p.kind = s, kind
	copy(p.pendPub[:], pub)
	if kind != protocol.HandshakeRekey {
		p.sess, p.rotating = nil, nil
	}
}

// handshakeKey is K(0) of a handshake of kind: a re-key's is chained from the current session's
// key (a zero key when there is none: the vault refuses that finish for its state anyway).
func (p *pair) handshakeKey(kind int, own *protocol.Ephemeral, peer [32]byte, tr [32]byte, lane protocol.LaneID) (protocol.Key, error) {
	if kind != protocol.HandshakeRekey {
		return protocol.Handshake(own, peer, tr, lane)
	}
	var prev protocol.Key
	if p.sess != nil {
		prev = p.sess.key
	}
	return protocol.Rekey(&prev, own, peer, tr, lane)
}

func (p *pair) opFinish() {
	kind := p.kind
	if p.pending == nil {
		kind = 1 + p.rng.IntN(3)
	}
	var lane protocol.LaneID
	copy(lane[:], p.bytes(16))
	var ticket []byte
	if kind == protocol.HandshakeJoin || p.rng.IntN(8) == 0 {
		ticket = p.bytes(1 + p.rng.IntN(256))
	}
	serverTime := p.nowMs() + p.rng.Int64N(7_200_000) - 3_600_000
	expires := uint64(0)
	if p.rng.IntN(2) == 0 {
		expires = uint64(serverTime + p.rng.Int64N(43_200_000))
	}
	var (
		srvPub [32]byte
		key    protocol.Key
		tr     [32]byte
		keyOK  bool
	)
	trTicket := ticket
	if kind == protocol.HandshakeRekey {
		trTicket = nil // a re-key binds no ticket
	}
	variant := p.rng.IntN(20)
	switch {
	case variant < 13 && p.pending != nil: // a real server
		se := p.serverEph()
		srvPub = se.Public()
		tr = protocol.HandshakeTranscript(kind, p.pendPub, srvPub, lane, trTicket)
		var err error
		if key, err = p.handshakeKey(kind, se, p.pendPub, tr, lane); err != nil {
			p.fatalf("server handshake: %v", err)
		}
		keyOK = true
	case variant < 16 && p.pending != nil: // any point: the client's side, computed natively
		copy(srvPub[:], p.bytes(32))
		tr = protocol.HandshakeTranscript(kind, p.pendPub, srvPub, lane, trTicket)
		k, err := p.handshakeKey(kind, p.eph(p.pending), srvPub, tr, lane)
		key, keyOK = k, err == nil
	case variant < 17:
		srvPub = lowOrder[p.rng.IntN(len(lowOrder))]
	default:
		copy(srvPub[:], p.bytes(32))
	}
	confirm := p.bytes(32)
	if keyOK && p.rng.IntN(12) != 0 {
		c := protocol.Confirm(&key, tr)
		confirm = c[:]
	}
	fields := []field{f(1, lane[:]), f(2, srvPub[:]), f(3, confirm), fu(4, uint64(serverTime))}
	switch p.rng.IntN(40) {
	case 0:
		fields[0] = f(1, lane[:15])
	case 1:
		fields[3] = fu(4, 0)
		serverTime = 0
	case 2:
		fields = fields[:3]
	case 3:
		fields[2] = f(3, confirm[:31])
	}
	if expires != 0 {
		fields = append(fields, fu(5, expires))
	}
	if ticket != nil {
		fields = append(fields, f(6, ticket))
	} else if kind == protocol.HandshakeJoin && p.rng.IntN(3) == 0 {
		fields = append(fields, f(6, p.bytes(257)))
	}
	r := p.do("finish", req(vault.OpFinish, fields...))
	if r.Code != 0 {
		switch {
		case p.pending == nil:
		case kind != protocol.HandshakeRekey:
			if p.state() != vault.StatePending {
				p.pending = nil // the vault spent its ephemeral
			}
		case r.code() == vault.CodeBadConfirm || r.code() == vault.CodeBadInput && strings.Contains(r.str(1), "public key"):
			p.pending = nil // the re-key is over; the old lane stays
		}
		return
	}
	if !keyOK {
		p.fatalf("finish accepted a confirmation the server never made")
	}
	old := p.sess
	p.sess = newSession(key, lane)
	p.pending, p.rotating = nil, nil
	p.sessions++
	if kind == protocol.HandshakeRekey {
		if old == nil {
			p.fatalf("a re-key finished without a session")
		}
		p.sess.offsetMs, p.sess.expiresMs = old.offsetMs, old.expiresMs
		if serverTime > 0 {
			p.sess.offsetMs = serverTime - p.nowMs()
		}
		if expires > 0 {
			p.sess.expiresMs = int64(expires)
		}
	} else {
		p.sess.offsetMs = serverTime - p.nowMs()
		p.sess.expiresMs = int64(expires)
	}
	if st := r.uint(p.t, 1); st != uint64(vault.StateActive) || r.uint(p.t, 2) != 0 {
		p.fatalf("finish reply state %d epoch %d", st, r.uint(p.t, 2))
	}
}

func (p *pair) randPath() string {
	if len(p.policy.Prefixes) > 0 && p.rng.IntN(4) != 0 {
		pre := p.policy.Prefixes[p.rng.IntN(len(p.policy.Prefixes))]
		if !strings.HasSuffix(pre, "/") && p.rng.IntN(5) != 0 {
			pre += "/"
		}
		return pre + segPool[p.rng.IntN(8)]
	}
	var b strings.Builder
	for range 1 + p.rng.IntN(4) {
		b.WriteByte('/')
		if p.rng.IntN(12) == 0 {
			b.WriteString(segPool[p.rng.IntN(len(segPool))])
		} else {
			b.WriteString(segPool[p.rng.IntN(8)])
		}
	}
	if p.rng.IntN(10) == 0 {
		b.WriteByte('/')
	}
	if p.rng.IntN(40) == 0 {
		return strings.TrimPrefix(b.String(), "/")
	}
	return b.String()
}

const queryChars = "abcxyz019=&%+-._~!$'()*,;:@/?"

func (p *pair) randQuery() (string, bool) {
	switch p.rng.IntN(6) {
	case 0, 1:
		return "", false
	case 2:
		return "", true
	}
	n := 1 + p.rng.IntN(60)
	b := make([]byte, n)
	for i := range b {
		b[i] = queryChars[p.rng.IntN(len(queryChars))]
	}
	if p.rng.IntN(30) == 0 {
		b[p.rng.IntN(n)] = []byte{' ', '#', 0x7f, 0x01, 0xc3}[p.rng.IntN(5)]
	}
	return string(b), true
}

func (p *pair) opSign() {
	method := "GET"
	if len(p.policy.Methods) > 0 && p.rng.IntN(8) != 0 {
		method = p.policy.Methods[p.rng.IntN(len(p.policy.Methods))]
	} else {
		method = methodPool[p.rng.IntN(len(methodPool))]
	}
	origin := originPool[p.rng.IntN(len(originPool))]
	if len(p.policy.Origins) > 0 && p.rng.IntN(6) != 0 {
		origin = p.policy.Origins[p.rng.IntN(len(p.policy.Origins))]
	}
	path := p.randPath()
	query, hasQuery := p.randQuery()
	var body []byte
	hasBody := p.rng.IntN(3) == 0
	if hasBody {
		switch p.rng.IntN(10) {
		case 0:
			body = []byte{}
		case 1:
			body = p.bytes(16 << 10)
		default:
			body = p.bytes(p.rng.IntN(600))
		}
	}
	fields := []field{fs(1, method), fs(2, origin), fs(3, path)}
	if hasQuery {
		fields = append(fields, fs(4, query))
	}
	if hasBody {
		fields = append(fields, f(5, body))
	}
	r := p.do("sign", req(vault.OpSign, fields...))
	if p.sess != nil && (r.Code == 0 || r.str(1) == "request cannot be signed") {
		p.sess.nonce++ // the vault spends a nonce on every request that reaches its signer
	}
	if r.Code != 0 {
		if r.code() == vault.CodeNoSession && p.sess != nil {
			p.fatalf("no_session while the server holds a lane")
		}
		return
	}
	s := p.sess
	if s == nil {
		p.fatalf("signed without a session")
	}
	p.signs++
	sigInput, sig, cd := r.str(1), r.str(2), r.str(3)
	parsed, err := protocol.ParseSigned(sigInput, sig)
	if err != nil {
		p.fatalf("ParseSigned(%q, %q): %v", sigInput, sig, err)
	}
	if parsed.KeyID != (protocol.KeyID{Lane: s.lane, Epoch: s.epoch}) {
		p.fatalf("keyid %v, want lane %v epoch %d", parsed.KeyID, s.lane, s.epoch)
	}
	if parsed.Nonce != s.nonce {
		p.fatalf("nonce %d, want %d", parsed.Nonce, s.nonce)
	}
	if want := (p.nowMs() + s.offsetMs) / 1000; parsed.Created != want {
		p.fatalf("created %d, want %d", parsed.Created, want)
	}
	if hasBody {
		if want := protocol.ContentDigest(body); cd != want {
			p.fatalf("content-digest %q, want %q", cd, want)
		}
		sum := sha256.Sum256(body)
		if err := protocol.CheckContentDigest(cd, &sum); err != nil {
			p.fatalf("CheckContentDigest: %v", err)
		}
	} else if _, ok := r.Get(3); ok {
		p.fatalf("content-digest without a body")
	}
	rq := protocol.Request{Method: method, Authority: origin[strings.Index(origin, "://")+3:], Path: path, Query: query, ContentDigest: cd}
	ver := protocol.NewVerifier(&s.signKey)
	if err := ver.Verify(parsed, &rq); err != nil {
		p.fatalf("signature does not verify natively: %v\nSignature-Input: %s", err, sigInput)
	}
	// A tampered request must not verify: the check above is not vacuous.
	rq.Path += "x"
	if err := ver.Verify(parsed, &rq); protocol.ErrorClass(err) != "bad_signature" {
		p.fatalf("tampered path: %v", err)
	}
}

func (p *pair) opRotateBegin() {
	r := p.do("rotate_begin", req(vault.OpRotateBegin))
	if r.Code != 0 {
		if p.sess != nil && p.pending == nil && r.code() == vault.CodeNoSession {
			p.fatalf("rotate_begin: no_session while the server holds a lane")
		}
		return
	}
	pub, _ := r.Get(1)
	if p.rotating != nil && bytes.Equal(pub, p.rotPub[:]) {
		return // a retry gets the same key
	}
	p.rotating = p.takeScalar(pub)
	copy(p.rotPub[:], pub)
}

func (p *pair) opRotateFinish() {
	s := p.sess
	epoch := uint64(1)
	if s != nil {
		epoch = uint64(s.epoch) + 1
	}
	var (
		srvPub [32]byte
		key    protocol.Key
		tr     [32]byte
		keyOK  bool
	)
	variant := p.rng.IntN(20)
	switch {
	case variant < 13 && s != nil && p.rotating != nil:
		se := p.serverEph()
		srvPub = se.Public()
		tr = protocol.RotateTranscript(s.lane, uint32(epoch), p.rotPub, srvPub)
		var err error
		if key, err = protocol.Ratchet(&s.key, se, p.rotPub, tr, s.lane, uint32(epoch)); err != nil {
			p.fatalf("server ratchet: %v", err)
		}
		keyOK = true
	case variant < 16 && s != nil && p.rotating != nil:
		copy(srvPub[:], p.bytes(32))
		tr = protocol.RotateTranscript(s.lane, uint32(epoch), p.rotPub, srvPub)
		k, err := protocol.Ratchet(&s.key, p.eph(p.rotating), srvPub, tr, s.lane, uint32(epoch))
		key, keyOK = k, err == nil
	case variant < 17:
		srvPub = lowOrder[p.rng.IntN(len(lowOrder))]
	default:
		copy(srvPub[:], p.bytes(32))
	}
	confirm := p.bytes(32)
	if keyOK && p.rng.IntN(12) != 0 {
		c := protocol.Confirm(&key, tr)
		confirm = c[:]
	}
	sentEpoch := epoch
	switch p.rng.IntN(25) {
	case 0:
		sentEpoch = epoch + 1
	case 1:
		sentEpoch = epoch - 1
	case 2:
		sentEpoch = 1 << 33
	}
	r := p.do("rotate_finish", req(vault.OpRotateFinish, f(1, srvPub[:]), fu(2, sentEpoch), f(3, confirm)))
	if r.Code != 0 {
		if p.rotating != nil && p.state() != vault.StateRotating {
			p.rotating = nil // the vault dropped the rotation
		}
		return
	}
	if !keyOK || sentEpoch != epoch {
		p.fatalf("rotate_finish accepted a confirmation the server never made")
	}
	s.prevEvent, s.hasPrev = s.eventKey, true
	s.prevUntil = p.clock.Now().Add(vault.EventGrace)
	s.key, s.epoch = key, uint32(epoch)
	s.signKey, s.eventKey = protocol.SignKey(&key), protocol.EventKey(&key)
	p.rotating = nil
	p.rotations++
	if r.uint(p.t, 1) != uint64(vault.StateActive) || r.uint(p.t, 2) != epoch {
		p.fatalf("rotate_finish reply %x", r.raw)
	}
}

const reasonChars = "abcdefghijklmnopqrstuvwxyz0123456789_"

func (p *pair) opEvent() {
	s := p.sess
	ev := protocol.Event{
		Type: protocol.EventType(1 + p.rng.IntN(4)),
		Time: p.nowMs(),
	}
	if p.rng.IntN(2) != 0 && ev.Type != protocol.EventExpiring {
		ev.Type = protocol.EventRotate // keep sessions alive longer
	}
	if ev.Type == protocol.EventExpiring || p.rng.IntN(10) == 0 {
		ev.Deadline = p.nowMs() + p.rng.Int64N(3_600_000)
	}
	rb := make([]byte, p.rng.IntN(20))
	for i := range rb {
		rb[i] = reasonChars[p.rng.IntN(len(reasonChars))]
	}
	ev.Reason = string(rb)
	key := protocol.Key{}
	if s != nil {
		ev.Lane, ev.Epoch, ev.Seq, key = s.lane, s.epoch, s.eventSeq+1+uint64(p.rng.IntN(3)), s.eventKey
	} else {
		copy(ev.Lane[:], p.bytes(16))
		ev.Seq = 1
		copy(key[:], p.bytes(32))
	}
	variant := p.rng.IntN(24)
	switch {
	case variant == 0 && s != nil: // replay
		ev.Seq = s.eventSeq - uint64(min(s.eventSeq, uint64(p.rng.IntN(2))))
	case variant == 1: // another lane
		ev.Lane[p.rng.IntN(16)] ^= 1
	case variant == 2 && s != nil && s.hasPrev: // previous epoch, in or out of its grace
		ev.Epoch, key = s.epoch-1, s.prevEvent
	case variant == 3: // an unknown epoch
		ev.Epoch += 1 + uint32(p.rng.IntN(3))
	case variant == 4: // the wrong key
		key[0] ^= 1
	case variant == 5 && s != nil && s.epoch == 0: // epoch -1 under the wiped previous key
		ev.Epoch, key = 0xffffffff, protocol.Key{}
	}
	sealed, err := protocol.SealEvent(&key, &ev)
	if err != nil {
		p.fatalf("SealEvent: %v", err)
	}
	switch {
	case variant == 6:
		sealed[p.rng.IntN(len(sealed))] ^= byte(1 + p.rng.IntN(255))
	case variant == 7:
		sealed = sealed[:p.rng.IntN(len(sealed))]
	case variant == 8:
		sealed = append(sealed, 0)
	}
	r := p.do("event", req(vault.OpEvent, f(1, sealed)))
	if r.Code != 0 {
		return
	}
	if s == nil {
		p.fatalf("event accepted without a session")
	}
	p.events++
	if ev.Epoch != s.epoch && !(ev.Epoch+1 == s.epoch && s.hasPrev && p.clock.Now().Before(s.prevUntil)) {
		if ev.Epoch != 0xffffffff || s.epoch != 0 {
			p.fatalf("event of epoch %d accepted at epoch %d", ev.Epoch, s.epoch)
		}
		p.wrapAccepted++ // see TestEventEpochWrapIsRefused; counted so that the run goes on
	}
	if ev.Seq <= s.eventSeq {
		p.fatalf("replayed event accepted")
	}
	s.eventSeq = ev.Seq
	if r.uint(p.t, 1) != uint64(ev.Type) || r.str(2) != ev.Reason {
		p.fatalf("event reply %x", r.raw)
	}
	switch ev.Type {
	case protocol.EventRevoked, protocol.EventExpired:
		p.sess, p.rotating, p.pending = nil, nil, nil
		if r.uint(p.t, 4) != uint64(vault.StateWiped) {
			p.fatalf("event %v left state %d", ev.Type, r.uint(p.t, 4))
		}
	case protocol.EventExpiring:
		if ev.Deadline > 0 {
			s.expiresMs = ev.Deadline
		}
	}
}

func (p *pair) opSocketAuth() {
	n := 16 + p.rng.IntN(49)
	if p.rng.IntN(15) == 0 {
		n = []int{0, 15, 65, 200}[p.rng.IntN(4)]
	}
	ch := p.bytes(n)
	r := p.do("socket_auth", req(vault.OpSocketAuth, f(1, ch)))
	if r.Code != 0 {
		return
	}
	s := p.sess
	if s == nil {
		p.fatalf("socket auth without a session")
	}
	if got, want := r.str(1), (protocol.KeyID{Lane: s.lane, Epoch: s.epoch}).String(); got != want {
		p.fatalf("socket keyid %q, want %q", got, want)
	}
	tag, _ := r.Get(2)
	if want := protocol.SocketAuth(&s.signKey, s.lane, s.epoch, ch); !bytes.Equal(tag, want[:]) {
		p.fatalf("socket tag %x, want %x", tag, want)
	}
}

func (p *pair) opStatus() {
	r := p.do("status", req(vault.OpStatus))
	if r.Code != 0 {
		p.fatalf("status failed: %s", r.code())
	}
	st := vault.State(r.uint(p.t, 1))
	live := st == vault.StateActive || st == vault.StateRotating
	if live != (p.sess != nil) {
		p.fatalf("state %v, server holds a lane: %v", st, p.sess != nil)
	}
	if s := p.sess; s != nil {
		if r.uint(p.t, 2) != uint64(s.epoch) {
			p.fatalf("status epoch %d, want %d", r.uint(p.t, 2), s.epoch)
		}
		if zigzag(s.offsetMs) != r.uint(p.t, 4) {
			p.fatalf("status offset %d, want %d", r.uint(p.t, 4), s.offsetMs)
		}
		if uint64(max(s.expiresMs, 0)) != r.uint(p.t, 3) {
			p.fatalf("status expires %d, want %d", r.uint(p.t, 3), s.expiresMs)
		}
	}
}

// state asks both twins for their state (a status request like any other).
func (p *pair) state() vault.State {
	r := p.do("status", req(vault.OpStatus))
	return vault.State(r.uint(p.t, 1))
}

func zigzag(n int64) uint64 { return uint64(n<<1) ^ uint64(n>>63) }

func (p *pair) opWipe() {
	r := p.do("wipe", req(vault.OpWipe))
	if r.Code != 0 {
		p.fatalf("wipe failed: %s", r.code())
	}
	p.sess, p.rotating, p.pending = nil, nil, nil
}

// opJunk sends a request that is valid ABI but wrong for the operation.
func (p *pair) opJunk() {
	switch p.rng.IntN(6) {
	case 0:
		p.do("junk", req(byte(11+p.rng.IntN(245))))
	case 1:
		p.do("junk", req(vault.OpStatus, fu(1, 1)))
	case 2:
		p.do("junk", req(byte(1+p.rng.IntN(10)), f(byte(7+p.rng.IntN(40)), p.bytes(3))))
	case 3:
		p.do("junk", req(vault.OpSign, fs(1, "GET"), fs(2, "https://app.example"), fs(3, "/x"), f(4, []byte{0x80})))
	case 4:
		p.do("junk", req(vault.OpEvent))
	case 5:
		q := req(byte(1+p.rng.IntN(10)), f(1, p.bytes(p.rng.IntN(40))), f(2, p.bytes(p.rng.IntN(40))))
		q[p.rng.IntN(len(q))] ^= byte(1 + p.rng.IntN(255))
		p.do("junk", q)
	}
}

// step runs one random operation, weighted by the state the server believes the lane is in.
func (p *pair) step() {
	switch d := p.rng.IntN(1000); {
	case d < 5:
		p.clock.Advance(time.Duration(p.rng.Int64N(int64(3 * time.Minute))))
	default:
		p.clock.Advance(time.Duration(p.rng.Int64N(int64(2 * time.Second))))
	}
	if !p.bound && p.rng.IntN(8) != 0 {
		p.opPolicy()
		return
	}
	w := p.rng.IntN(100)
	switch {
	case p.sess == nil && p.pending == nil:
		switch {
		case w < 70:
			p.opBegin()
		case w < 75:
			p.opFinish()
		case w < 80:
			p.opSign()
		case w < 84:
			p.opEvent()
		case w < 88:
			p.opStatus()
		case w < 91:
			p.opRotateBegin()
		case w < 93:
			p.opPolicy()
		case w < 95:
			p.opWipe()
		case w < 97:
			p.opSocketAuth()
		default:
			p.opJunk()
		}
	case p.sess == nil: // pending
		switch {
		case w < 75:
			p.opFinish()
		case w < 82:
			p.opBegin()
		case w < 86:
			p.opSign()
		case w < 90:
			p.opStatus()
		case w < 93:
			p.opWipe()
		case w < 96:
			p.opRotateFinish()
		default:
			p.opJunk()
		}
	default:
		switch {
		case w < 40:
			p.opSign()
		case w < 48:
			if p.rotating == nil {
				p.opRotateBegin()
			} else {
				p.opRotateFinish()
			}
		case w < 52:
			p.opRotateBegin()
		case w < 56:
			p.opRotateFinish()
		case w < 68:
			p.opEvent()
		case w < 73:
			p.opSocketAuth()
		case w < 80:
			p.opStatus()
		case w < 83:
			p.opBegin() // mostly re-key, sometimes refused login
		case w < 86:
			if p.pending != nil {
				p.opFinish()
			} else {
				p.opBegin()
			}
		case w < 90:
			p.opWipe()
		case w < 91:
			p.opPolicy()
		default:
			p.opJunk()
		}
	}
}

// finishCheck compares what both sides drew from their random sources.
func (p *pair) finishCheck() {
	p.t.Helper()
	p.opStatus()
	if wb := p.wasm.rand.drawn(); wb != p.nrand.n {
		p.t.Fatalf("randomness drawn: wasm %d bytes, native %d", wb, p.nrand.n)
	}
}

// TestDifferential runs thousands of random operation sequences (login or join, signing,
// rotations, events, socket auth, re-key, wipe, with valid and invalid inputs in every state)
// through the module and the native vault.
func TestDifferential(t *testing.T) {
	instances, steps := 64, 600
	if testing.Short() {
		instances, steps = 8, 300
	}
	var totals struct{ ops, oks, signs, sessions, rotations, events, wraps atomic.Int64 }
	codes := make([]map[string]int, instances)
	for w := range 2 { // two workers: one per core
		t.Run("worker"+strconv.Itoa(w), func(t *testing.T) {
			t.Parallel()
			for i := w; i < instances; i += 2 {
				p := newPair(t, uint64(1000+i))
				for range steps {
					p.step()
				}
				p.finishCheck()
				totals.ops.Add(int64(p.ops))
				totals.oks.Add(int64(p.oks))
				totals.signs.Add(int64(p.signs))
				totals.sessions.Add(int64(p.sessions))
				totals.rotations.Add(int64(p.rotations))
				totals.events.Add(int64(p.events))
				totals.wraps.Add(int64(p.wrapAccepted))
				codes[i] = p.codes
				p.wasm.Close()
			}
		})
	}
	t.Cleanup(func() {
		all := map[string]int{}
		for _, c := range codes {
			for k, v := range c {
				all[k] += v
			}
		}
		t.Logf("%d instances: %d ops (%d ok), %d sessions, %d verified signatures, %d rotations, %d events accepted",
			instances, totals.ops.Load(), totals.oks.Load(), totals.sessions.Load(), totals.signs.Load(), totals.rotations.Load(), totals.events.Load())
		t.Logf("outcomes: %v", all)
		if n := totals.wraps.Load(); n > 0 {
			t.Errorf("%d events of epoch 2^32-1 sealed under the all-zero key were accepted at epoch 0 (TestEventEpochWrapIsRefused)", n)
		}
		if totals.sessions.Load() < int64(instances) || totals.signs.Load() < int64(instances)*20 || totals.rotations.Load() < int64(instances) {
			t.Errorf("the generator reached too few sessions, signatures or rotations")
		}
	})
}
