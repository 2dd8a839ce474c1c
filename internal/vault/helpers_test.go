package vault

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	mrand "math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// This file holds the test doubles: fake clocks, a deterministic random source, a fake server
// built only from the protocol package, an ABI message builder, and the key-material scanners.

// t0 is the server's notion of "now" at the start of every test.
var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// clock is a fake clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// newRand returns a deterministic random source.
func newRand(seed byte) io.Reader { return mrand.NewChaCha8([32]byte{seed}) }

// failingReader is a random source that always fails.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("no entropy") }

// fakeServer is the server side of one lane, built from the protocol package alone.
type fakeServer struct {
	t     testing.TB
	rand  io.Reader
	clock *clock
	lane  protocol.LaneID
	epoch uint32
	key   protocol.Key            // current epoch key
	keys  map[uint32]protocol.Key // every epoch key of the lane
	seq   uint64                  // last event seq sent
}

func newFakeServer(t testing.TB, c *clock, seed byte) *fakeServer {
	s := &fakeServer{t: t, rand: newRand(seed), clock: c, keys: map[uint32]protocol.Key{}}
	io.ReadFull(s.rand, s.lane[:])
	return s
}

func (s *fakeServer) ephemeral() *protocol.Ephemeral {
	s.t.Helper()
	e, err := protocol.NewEphemeral(s.rand)
	if err != nil {
		s.t.Fatal(err)
	}
	return e
}

// handshake answers a login or join and adopts the derived key as the lane's epoch 0.
func (s *fakeServer) handshake(kind int, clientPub [protocol.PublicKeySize]byte, ticket []byte) Handshake {
	s.t.Helper()
	eph := s.ephemeral()
	pub := eph.Public()
	tr := protocol.HandshakeTranscript(kind, clientPub, pub, s.lane, ticket)
	var k protocol.Key
	var err error
	if kind == protocol.HandshakeRekey {
		k, err = protocol.Rekey(&s.key, eph, clientPub, tr, s.lane) // chained from the current key
	} else {
		k, err = protocol.Handshake(eph, clientPub, tr, s.lane)
	}
	if err != nil {
		s.t.Fatalf("server handshake: %v", err)
	}
	c := protocol.Confirm(&k, tr)
	s.key, s.epoch, s.seq = k, 0, 0
	s.keys = map[uint32]protocol.Key{0: k}
	return Handshake{Lane: s.lane, ServerPub: pub, Confirm: c[:], ServerTime: s.clock.now().UnixMilli(), Ticket: ticket}
}

func (s *fakeServer) login(clientPub [protocol.PublicKeySize]byte) Handshake {
	return s.handshake(protocol.HandshakeLogin, clientPub, nil)
}

// rotation is the server's rotate reply, not yet committed on the server side.
type rotation struct {
	ServerPub [protocol.PublicKeySize]byte
	Epoch     uint32
	Confirm   []byte
	key       protocol.Key
}

func (s *fakeServer) rotate(clientPub [protocol.PublicKeySize]byte) rotation {
	s.t.Helper()
	eph := s.ephemeral()
	pub := eph.Public()
	e := s.epoch + 1
	tr := protocol.RotateTranscript(s.lane, e, clientPub, pub)
	k, err := protocol.Ratchet(&s.key, eph, clientPub, tr, s.lane, e)
	if err != nil {
		s.t.Fatalf("server ratchet: %v", err)
	}
	c := protocol.Confirm(&k, tr)
	return rotation{ServerPub: pub, Epoch: e, Confirm: c[:], key: k}
}

func (s *fakeServer) commit(r rotation) { s.key, s.epoch, s.keys[r.Epoch] = r.key, r.Epoch, r.key }

func (s *fakeServer) signKey() protocol.Key { return protocol.SignKey(&s.key) }

func (s *fakeServer) eventKey(epoch uint32) protocol.Key {
	k, ok := s.keys[epoch]
	if !ok {
		s.t.Fatalf("no key for epoch %d", epoch)
	}
	return protocol.EventKey(&k)
}

// event seals an event of the current epoch with the next seq.
func (s *fakeServer) event(typ protocol.EventType, reason string, deadline int64) []byte {
	return s.eventAt(s.epoch, typ, reason, deadline)
}

// eventAt seals an event of the given epoch (under that epoch's event key) with the next seq.
func (s *fakeServer) eventAt(epoch uint32, typ protocol.EventType, reason string, deadline int64) []byte {
	s.t.Helper()
	s.seq++
	ek := s.eventKey(epoch)
	return s.seal(&ek, protocol.Event{Type: typ, Lane: s.lane, Epoch: epoch, Seq: s.seq,
		Time: s.clock.now().UnixMilli(), Deadline: deadline, Reason: reason})
}

func (s *fakeServer) seal(ek *protocol.Key, e protocol.Event) []byte {
	s.t.Helper()
	b, err := protocol.SealEvent(ek, &e)
	if err != nil {
		s.t.Fatalf("seal: %v", err)
	}
	return b
}

// request is what the server sees of a signed request.
func serverRequest(r SignRequest, sig Signature) protocol.Request {
	return protocol.Request{
		Method:        r.Method,
		Authority:     r.Origin[strings.Index(r.Origin, "://")+3:],
		Path:          r.Path,
		Query:         r.Query,
		ContentDigest: sig.ContentDigest,
	}
}

// verifyUnder checks sig's MAC under the sign key of epoch key k, nothing else.
func verifyUnder(k protocol.Key, r SignRequest, sig Signature) (*protocol.Signed, error) {
	signed, err := protocol.ParseSigned(sig.SignatureInput, sig.Signature)
	if err != nil {
		return nil, err
	}
	sk := protocol.SignKey(&k)
	req := serverRequest(r, sig)
	return signed, protocol.NewVerifier(&sk).Verify(signed, &req)
}

// verify checks sig as the server would: profile, keyid naming the lane's current epoch, MAC,
// created within the default window of the server clock, and the body digest.
func (s *fakeServer) verify(r SignRequest, sig Signature) (*protocol.Signed, error) {
	signed, err := verifyUnder(s.key, r, sig)
	if err != nil {
		return signed, err
	}
	if signed.KeyID != (protocol.KeyID{Lane: s.lane, Epoch: s.epoch}) {
		return signed, errors.New("keyid " + signed.KeyID.String() + " is not the current epoch")
	}
	if err := (protocol.Window{}).CheckCreated(signed.Created, s.clock.now()); err != nil {
		return signed, err
	}
	if r.HasBody {
		sum := sha256.Sum256(r.Body)
		if err := protocol.CheckContentDigest(sig.ContentDigest, &sum); err != nil {
			return signed, err
		}
	}
	return signed, nil
}

// harness is a vault with a bound policy, its fake server, and their two clocks.
type harness struct {
	t      testing.TB
	local  *clock // the vault's clock
	remote *clock // the server's clock
	v      *Vault
	srv    *fakeServer
}

const appOrigin = "https://app.example"

var appPolicy = Policy{Self: appOrigin}

// getMe is a request that appPolicy allows.
var getMe = SignRequest{Method: "GET", Origin: appOrigin, Path: "/api/me"}

// newHarness returns a vault whose local clock runs skew ahead of the server's, with appPolicy
// bound.
func newHarness(t testing.TB, skew time.Duration) *harness {
	t.Helper()
	h := &harness{t: t, local: &clock{t0.Add(skew)}, remote: &clock{t0}}
	h.v = New(newRand(1), h.local.now)
	h.srv = newFakeServer(t, h.remote, 2)
	if err := h.v.BindPolicy(appPolicy); err != nil {
		t.Fatal(err)
	}
	return h
}

// active returns a harness whose vault has logged in.
func active(t testing.TB) *harness {
	t.Helper()
	h := newHarness(t, 0)
	h.login()
	return h
}

func (h *harness) advance(d time.Duration) {
	h.local.advance(d)
	h.remote.advance(d)
}

func (h *harness) login() {
	h.t.Helper()
	pub, err := h.v.Begin(protocol.HandshakeLogin)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.v.Finish(h.srv.login(pub)); err != nil {
		h.t.Fatal(err)
	}
	if h.v.State() != StateActive {
		h.t.Fatalf("state after login: %v", h.v.State())
	}
}

func (h *harness) rotate() {
	h.t.Helper()
	pub, err := h.v.BeginRotate()
	if err != nil {
		h.t.Fatal(err)
	}
	r := h.srv.rotate(pub)
	if err := h.v.FinishRotate(r.ServerPub, r.Epoch, r.Confirm); err != nil {
		h.t.Fatal(err)
	}
	h.srv.commit(r)
}

// sign signs r and checks that the server accepts the signature.
func (h *harness) sign(r SignRequest) (Signature, *protocol.Signed) {
	h.t.Helper()
	sig, err := h.v.Sign(r)
	if err != nil {
		h.t.Fatalf("sign %s: %v", short(r), err)
	}
	signed, err := h.srv.verify(r, sig)
	if err != nil {
		h.t.Fatalf("server refuses the signature of %s: %v\n%s\n%s", short(r), err, sig.SignatureInput, sig.Signature)
	}
	return sig, signed
}

// short describes r in at most a line.
func short(r SignRequest) string {
	s := r.Method + " " + r.Origin + r.Path
	if r.Query != "" {
		s += "?" + r.Query
	}
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}

// snap is everything a refused operation must leave unchanged.
type snap struct {
	Status
	seq, eventSeq uint64
	bound         bool
	lane          protocol.LaneID
	eph           *protocol.Ephemeral
	ephPub        [protocol.PublicKeySize]byte
	signer        *protocol.Signer
	key, event    protocol.Key
	prev          protocol.Key
	prevUntil     time.Time
}

func snapshot(v *Vault) snap {
	s := snap{Status: v.Status(), seq: v.seq, eventSeq: v.eventSeq, bound: v.policy != nil, lane: v.lane,
		eph: v.eph, signer: v.signer, key: v.key, event: v.eventKey, prev: v.prevEvent, prevUntil: v.prevUntil}
	if v.eph != nil {
		s.ephPub = v.eph.Public()
	}
	return s
}

// unchanged fails if v differs from before.
func unchanged(t *testing.T, v *Vault, before snap, what string) {
	t.Helper()
	if after := snapshot(v); after != before {
		t.Fatalf("%s changed the vault:\nbefore %+v\nafter  %+v", what, before.Status, after.Status)
	}
}

// wantCode fails unless err is a vault *Error with the given code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if !errors.Is(err, &Error{Code: code}) {
		t.Fatalf("got %v, want code %s", err, code)
	}
	var e *Error
	if !errors.As(err, &e) || !strings.HasPrefix(err.Error(), "vault: "+code+": ") {
		t.Fatalf("error %q is not a vault error of code %s", err, code)
	}
}

// ---- ABI messages ----

func field(tag byte, v []byte) protocol.Field  { return protocol.Field{Tag: tag, Value: v} }
func sfield(tag byte, s string) protocol.Field { return protocol.Field{Tag: tag, Value: []byte(s)} }
func ufield(tag byte, n uint64) protocol.Field {
	return protocol.Field{Tag: tag, Value: binary.AppendUvarint(nil, n)}
}
func lfield(tag byte, items ...string) protocol.Field {
	return protocol.Field{Tag: tag, Value: protocol.AppendList(nil, items)}
}

func msg(op byte, fields ...protocol.Field) []byte {
	m := protocol.Message{Code: op, Fields: fields}
	return m.Append(nil)
}

// call runs one ABI call; it fails the test on a panic or a reply that does not decode. It
// returns the reply's code ("" for success) and decoded message.
func call(t testing.TB, v *Vault, in []byte) (string, protocol.Message) {
	t.Helper()
	var out []byte
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Call(%x) panicked: %v", in, r)
			}
		}()
		out = v.Call(in)
	}()
	m, err := protocol.DecodeMessage(out)
	if err != nil {
		t.Fatalf("reply %x does not decode: %v", out, err)
	}
	code := CodeOf(m.Code)
	if m.Code > byte(len(codes)) {
		t.Fatalf("reply status %d is not a known code", m.Code)
	}
	if code != "" {
		if len(m.Fields) != 1 || m.Fields[0].Tag != 1 || len(m.Fields[0].Value) == 0 {
			t.Fatalf("error reply %x does not carry exactly one message field", out)
		}
	}
	return code, m
}

// mustCall runs an ABI call that must succeed.
func mustCall(t testing.TB, v *Vault, in []byte) protocol.Message {
	t.Helper()
	code, m := call(t, v, in)
	if code != "" {
		msg, _ := m.Get(1)
		t.Fatalf("call op %#x: %s: %s", in[1], code, msg)
	}
	return m
}

func getUint(t testing.TB, m protocol.Message, tag byte) uint64 {
	t.Helper()
	n, ok, err := m.Uint(tag)
	if !ok || err != nil {
		t.Fatalf("reply field %d: present %v, %v", tag, ok, err)
	}
	return n
}

// ---- key-material scanners ----

// leak reports how a window of secret appears in b: any 8 consecutive bytes raw or in lower or
// upper case hex, or any 6 consecutive bytes in standard or URL base64 (8 consecutive secret bytes
// encoded at any alignment contain an aligned 6-byte run). It returns "" when nothing does.
func leak(b, secret []byte) string {
	for i := 0; i+8 <= len(secret); i++ {
		w := secret[i : i+8]
		if bytes.Contains(b, w) {
			return "raw"
		}
		x := hex.EncodeToString(w)
		if bytes.Contains(b, []byte(x)) || bytes.Contains(b, []byte(strings.ToUpper(x))) {
			return "hex"
		}
	}
	for i := 0; i+6 <= len(secret); i++ {
		w := secret[i : i+6]
		if bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString(w))) {
			return "base64"
		}
		if bytes.Contains(b, []byte(base64.URLEncoding.EncodeToString(w))) {
			return "base64url"
		}
	}
	return ""
}

// hmacChains returns the SHA-256 chaining values after the HMAC inner and outer pad blocks of
// key: what a precomputed HMAC state holds, and enough to forge MACs without the key.
func hmacChains(key protocol.Key) (inner, outer []byte) {
	var ipad, opad [sha256.BlockSize]byte
	copy(ipad[:], key[:])
	copy(opad[:], key[:])
	for i := range ipad {
		ipad[i] ^= 0x36
		opad[i] ^= 0x5c
	}
	chain := func(pad []byte) []byte {
		h := sha256.New()
		h.Write(pad)
		st, err := h.(interface{ MarshalBinary() ([]byte, error) }).MarshalBinary()
		if err != nil {
			panic(err)
		}
		return st[4 : 4+32] // magic "sha\x03", then the eight chaining words
	}
	return chain(ipad[:]), chain(opad[:])
}

// reachable returns the memory reachable from x, through pointers, interfaces, structs, arrays,
// slices (up to their capacity), maps and strings, unexported fields included, as byte strings:
// each byte array or slice as is; arrays and slices of wider integers and 64-bit scalars in both
// byte orders. Functions and channels are not followed.
func reachable(x any) [][]byte {
	type visit struct {
		p uintptr
		t reflect.Type
	}
	seen := map[visit]bool{}
	var out [][]byte
	ints := func(v reflect.Value) {
		size := int(v.Type().Elem().Size())
		be := make([]byte, 0, v.Len()*size)
		le := make([]byte, 0, v.Len()*size)
		for i := 0; i < v.Len(); i++ {
			e := v.Index(i)
			var u uint64
			if e.CanUint() {
				u = e.Uint()
			} else {
				u = uint64(e.Int())
			}
			for j := size - 1; j >= 0; j-- {
				be = append(be, byte(u>>(8*j)))
			}
			for j := 0; j < size; j++ {
				le = append(le, byte(u>>(8*j)))
			}
		}
		out = append(out, be)
		if size > 1 {
			out = append(out, le)
		}
	}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() {
				return
			}
			k := visit{v.Pointer(), v.Type()}
			if seen[k] {
				return
			}
			seen[k] = true
			walk(v.Elem())
		case reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				walk(v.Field(i))
			}
		case reflect.Slice:
			if v.IsNil() {
				return
			}
			walkSeq(v.Slice(0, v.Cap()), ints, walk)
		case reflect.Array:
			walkSeq(v, ints, walk)
		case reflect.Map:
			it := v.MapRange()
			for it.Next() {
				walk(it.Key())
				walk(it.Value())
			}
		case reflect.String:
			out = append(out, []byte(v.String()))
		case reflect.Uint64, reflect.Int64, reflect.Uintptr:
			var u uint64
			if v.CanUint() {
				u = v.Uint()
			} else {
				u = uint64(v.Int())
			}
			out = append(out, binary.BigEndian.AppendUint64(nil, u), binary.LittleEndian.AppendUint64(nil, u))
		}
	}
	walk(reflect.ValueOf(x))
	return out
}

func walkSeq(v reflect.Value, ints func(reflect.Value), walk func(reflect.Value)) {
	switch v.Type().Elem().Kind() {
	case reflect.Uint8, reflect.Int8, reflect.Uint16, reflect.Int16, reflect.Uint32, reflect.Int32,
		reflect.Uint64, reflect.Int64, reflect.Uint, reflect.Int, reflect.Uintptr:
		ints(v)
	default:
		for i := 0; i < v.Len(); i++ {
			walk(v.Index(i))
		}
	}
}

// holds reports which of the named secrets have an 8-byte window anywhere in the memory
// reachable from x.
func holds(x any, secrets map[string][]byte) []string {
	mem := reachable(x)
	var found []string
	for name, s := range secrets {
		for _, b := range mem {
			if containsWindow(b, s) {
				found = append(found, name)
				break
			}
		}
	}
	return found
}

func containsWindow(b, secret []byte) bool {
	for i := 0; i+8 <= len(secret); i++ {
		if bytes.Contains(b, secret[i:i+8]) {
			return true
		}
	}
	return false
}

// bytesField returns the bytes of the (possibly unexported) []byte or byte-array field name of
// the struct v.
func bytesField(t *testing.T, v reflect.Value, name string) []byte {
	t.Helper()
	f := v.FieldByName(name)
	if !f.IsValid() {
		t.Fatalf("%s has no field %s", v.Type(), name)
	}
	if f.Kind() == reflect.Slice {
		f = f.Slice(0, f.Cap())
	}
	b := make([]byte, f.Len())
	for i := range b {
		b[i] = byte(f.Index(i).Uint())
	}
	return b
}

// structField returns the struct that the pointer field name of the struct v points to.
func structField(t *testing.T, v reflect.Value, name string) reflect.Value {
	t.Helper()
	f := v.FieldByName(name)
	if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() {
		t.Fatalf("%s has no non-nil pointer field %s", v.Type(), name)
	}
	return f.Elem()
}

func isZero(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }
