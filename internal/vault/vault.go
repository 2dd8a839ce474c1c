// Package vault is the worker's state machine: it holds one lane's key, signs requests within a
// policy bound at creation, runs the handshakes and rotations, verifies and applies server events,
// and wipes. It is compiled into the wasm module by wasm/worker and tested natively here.
//
// # Security
//
// No method returns key material: the key fields are unexported, no accessor exists, and the ABI
// ([Vault.Call]) replies carry only public values (public keys, headers, MAC tags over
// domain-separated messages, states). Wipe zeroes the epoch key, the derived keys and every MAC
// state. Errors carry a code and a fixed message, never input bytes that could be secret.
//
// # Concurrency
//
// A Vault is not safe for concurrent use. The worker is single-threaded; the wasm host serializes
// calls.
//
// # Errors
//
// Every error is an [*Error] with a Code from the list in errors.go, which the page receives as
// {code, message}.
package vault

import (
	"io"
	"strings"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// State is the vault's lifecycle state.
type State uint8

// States: Empty -> Pending (handshake begun) -> Active <-> Rotating -> Wiped -> Pending ...
const (
	StateEmpty    State = 0
	StatePending  State = 1
	StateActive   State = 2
	StateRotating State = 3
	StateWiped    State = 4
)

// String names the state.
func (s State) String() string {
	switch s {
	case StateEmpty:
		return "empty"
	case StatePending:
		return "pending"
	case StateActive:
		return "active"
	case StateRotating:
		return "rotating"
	case StateWiped:
		return "wiped"
	}
	return "unknown"
}

// Policy says which requests the vault signs. It is bound once, at creation; the first bind wins.
type Policy struct {
	// Self is the worker's own origin ("https://app.example"). Required.
	Self string
	// Origins the vault signs for. If empty, only Self.
	Origins []string
	// Prefixes of paths it signs for ("/api/" matches "/api/x"; "/api" matches "/api" and
	// "/api/x" but not "/apix"). If empty, every path.
	Prefixes []string
	// Methods it signs for. If empty, GET, HEAD, POST, PUT, PATCH, DELETE.
	Methods []string
	// Endpoints are the path prefixes of the session endpoints ("/sv/"), whose POST requests on
	// Self the worker itself makes (rotate, rekey, logout): signed whatever Prefixes and Methods
	// say. The worker never signs a page request for them.
	Endpoints []string
}

// Limits of a policy.
const (
	maxPolicyItems = 32
	maxPolicyItem  = 256
	// EventGrace is how long the previous epoch's event key stays usable after a rotation, so
	// that an event sealed by a server node that had not yet seen the rotation still lands.
	EventGrace = 2 * time.Minute
)

var defaultMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}

// Vault holds one lane. The zero value is not usable; call [New].
type Vault struct {
	rand io.Reader
	now  func() time.Time

	policy *Policy

	state  State
	reason string // why the vault was wiped, "" if never

	eph    *protocol.Ephemeral
	kind   int
	rekey  bool // a re-key handshake is pending while the current key stays active
	ticket []byte

	lane      protocol.LaneID
	epoch     uint32
	key       protocol.Key // epoch key K(e)
	signer    *protocol.Signer
	eventKey  protocol.Key
	prevEvent protocol.Key // EventKey(K(e-1)), valid until prevUntil
	prevUntil time.Time

	seq       uint64 // last nonce used
	eventSeq  uint64 // last event seq accepted
	offsetMs  int64  // server clock minus local clock
	expiresMs int64  // absolute deadline (server clock), 0 if unknown
}

// New returns an empty vault drawing randomness from rand and time from now.
func New(rand io.Reader, now func() time.Time) *Vault {
	return &Vault{rand: rand, now: now}
}

// State returns the current state.
func (v *Vault) State() State { return v.state }

// BindPolicy binds p. The first successful call wins; later calls fail with code policy_bound.
func (v *Vault) BindPolicy(p Policy) error {
	if v.policy != nil {
		return errf(CodePolicyBound, "policy is already bound")
	}
	if !validOrigin(p.Self) {
		return errf(CodeBadInput, "policy: self must be an origin like https://host[:port]")
	}
	if len(p.Origins) > maxPolicyItems || len(p.Prefixes) > maxPolicyItems || len(p.Methods) > maxPolicyItems || len(p.Endpoints) > maxPolicyItems {
		return errf(CodeTooLarge, "policy: too many entries")
	}
	for _, o := range p.Origins {
		if !validOrigin(o) {
			return errf(CodeBadInput, "policy: origins must be like https://host[:port]")
		}
	}
	for _, pre := range p.Prefixes {
		if len(pre) > maxPolicyItem || !cleanPath(pre) {
			return errf(CodeBadInput, "policy: prefixes must be clean absolute paths")
		}
	}
	for _, m := range p.Methods {
		if !validMethod(m) {
			return errf(CodeBadInput, "policy: methods must be upper-case tokens")
		}
	}
	for _, pre := range p.Endpoints {
		if len(pre) > maxPolicyItem || !cleanPath(pre) || !strings.HasSuffix(pre, "/") || pre == "/" {
			return errf(CodeBadInput, "policy: endpoints must be clean absolute paths ending in / (not /)")
		}
	}
	c := Policy{Self: p.Self, Origins: clone(p.Origins), Prefixes: clone(p.Prefixes), Methods: clone(p.Methods), Endpoints: clone(p.Endpoints)}
	if len(c.Origins) == 0 {
		c.Origins = []string{c.Self}
	}
	if len(c.Methods) == 0 {
		c.Methods = defaultMethods
	}
	v.policy = &c
	return nil
}

func clone(s []string) []string { return append([]string(nil), s...) }

func validOrigin(o string) bool {
	var rest string
	switch {
	case strings.HasPrefix(o, "https://"):
		rest = o[len("https://"):]
	case strings.HasPrefix(o, "http://"):
		rest = o[len("http://"):]
	default:
		return false
	}
	if rest == "" || len(o) > maxPolicyItem {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

func validMethod(m string) bool {
	if m == "" || len(m) > 16 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

// cleanPath accepts an absolute path with no dot segments, no encoded dots, slashes or
// backslashes, no empty segments, and only printable ASCII, so that a prefix check on it means
// what it says whatever the server's path normalization.
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' || len(p) > protocol.MaxComponentLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= 0x20 || c >= 0x7f || c == '\\' || c == '?' || c == '#' {
			return false
		}
		if c == '%' && i+2 < len(p) {
			h := strings.ToLower(p[i+1 : i+3])
			if h == "2e" || h == "2f" || h == "5c" {
				return false
			}
		}
		if c == '/' && i+1 < len(p) && p[i+1] == '/' {
			return false
		}
	}
	// Each "/"-separated segment (as strings.Split would give them, without its allocation).
	for start := 0; start <= len(p); {
		end := strings.IndexByte(p[start:], '/')
		if end < 0 {
			end = len(p)
		} else {
			end += start
		}
		seg := p[start:end]
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i] // some servers drop path parameters before resolving "..;/"
		}
		if seg == "." || seg == ".." {
			return false
		}
		start = end + 1
	}
	return true
}

func (v *Vault) allowed(method, origin, path string) error {
	p := v.policy
	if method == "POST" && origin == p.Self && cleanPath(path) {
		for _, pre := range p.Endpoints {
			if strings.HasPrefix(path, pre) {
				return nil // the worker's own session endpoints
			}
		}
	}
	ok := false
	for _, o := range p.Origins {
		if o == origin {
			ok = true
		}
	}
	if !ok {
		return errf(CodePolicyDenied, "origin is outside the policy")
	}
	if !cleanPath(path) {
		return errf(CodePolicyDenied, "path is not a clean absolute path")
	}
	if len(p.Prefixes) > 0 {
		ok = false
		for _, pre := range p.Prefixes {
			if strings.HasSuffix(pre, "/") && strings.HasPrefix(path, pre) ||
				path == pre || strings.HasPrefix(path, pre+"/") {
				ok = true
			}
		}
		if !ok {
			return errf(CodePolicyDenied, "path is outside the policy")
		}
	}
	for _, m := range p.Methods {
		if m == method {
			return nil
		}
	}
	return errf(CodePolicyDenied, "method is outside the policy")
}

// Begin starts a handshake and returns the ephemeral public key to send. Login and join
// (protocol.HandshakeLogin, HandshakeJoin) are allowed in states empty, pending (a retry gets a
// fresh key) and wiped. Re-key (protocol.HandshakeRekey) is allowed only while active: the vault
// keeps signing under the current key (the rekey request itself is signed) until [Vault.Finish]
// replaces it.
func (v *Vault) Begin(kind int) ([protocol.PublicKeySize]byte, error) {
	var pub [protocol.PublicKeySize]byte
	if v.policy == nil {
		return pub, errf(CodeBadState, "bind a policy first")
	}
	switch kind {
	case protocol.HandshakeLogin, protocol.HandshakeJoin:
		switch v.state {
		case StateEmpty, StatePending, StateWiped:
		default:
			return pub, errf(CodeBadState, "a session is active; log out first")
		}
	case protocol.HandshakeRekey:
		if v.state != StateActive {
			return pub, errf(CodeBadState, "re-key needs an active session")
		}
	default:
		return pub, errf(CodeBadInput, "unknown handshake kind")
	}
	eph, err := protocol.NewEphemeral(v.rand)
	if err != nil {
		return pub, errf(CodeInternal, "random source failed")
	}
	if v.eph != nil {
		v.eph.Wipe()
	}
	v.eph, v.kind = eph, kind
	if kind == protocol.HandshakeRekey {
		v.rekey = true
	} else {
		v.state = StatePending
	}
	return eph.Public(), nil
}

// Handshake is the server's login or join reply, as the worker hands it to [Vault.Finish].
type Handshake struct {
	Lane       protocol.LaneID
	ServerPub  [protocol.PublicKeySize]byte
	Confirm    []byte
	ServerTime int64  // Unix ms
	Expires    int64  // absolute deadline, Unix ms (server clock); 0 if none
	Ticket     []byte // join only
}

// Finish completes the handshake begun by [Vault.Begin]. On a confirmation mismatch the vault
// returns to empty and holds nothing.
func (v *Vault) Finish(h Handshake) error {
	if v.eph == nil || !(v.state == StatePending || v.rekey && v.state == StateActive) {
		return errf(CodeBadState, "no handshake in progress")
	}
	if v.rekey {
		return v.finishRekey(h)
	}
	if v.kind == protocol.HandshakeJoin && len(h.Ticket) == 0 {
		return errf(CodeBadInput, "join needs the ticket")
	}
	if h.ServerTime <= 0 {
		return errf(CodeBadInput, "server time missing")
	}
	eph := v.eph
	v.eph = nil
	tr := protocol.HandshakeTranscript(v.kind, eph.Public(), h.ServerPub, h.Lane, h.Ticket)
	k, err := protocol.Handshake(eph, h.ServerPub, tr, h.Lane)
	if err != nil {
		v.state = StateEmpty
		return errf(CodeBadInput, "server public key refused")
	}
	if err := protocol.CheckConfirm(&k, tr, h.Confirm); err != nil {
		k.Wipe()
		v.state = StateEmpty
		return errf(CodeBadConfirm, "server key confirmation failed")
	}
	v.wipeKeys()
	v.install(&k, h.Lane, 0)
	k.Wipe()
	v.seq, v.eventSeq = 0, 0
	v.offsetMs = h.ServerTime - v.now().UnixMilli()
	v.expiresMs = h.Expires
	v.reason = ""
	v.state = StateActive
	return nil
}

// AbortRekey gives up a re-key whose request failed (network, refusal, a malformed reply): its
// ephemeral key is wiped and the current lane goes on as before, free to rotate and to heed a
// later revoked(rekeyed) event. Without a re-key in progress it does nothing.
func (v *Vault) AbortRekey() {
	if !v.rekey {
		return
	}
	if v.eph != nil {
		v.eph.Wipe()
	}
	v.eph, v.rekey = nil, false
}

// finishRekey completes a re-key: on success the new lane replaces the old one; on failure the
// vault keeps the old lane (the server has not replaced it unless it answered with a valid
// confirmation, which is exactly what failed).
func (v *Vault) finishRekey(h Handshake) error {
	eph := v.eph
	v.eph, v.rekey = nil, false
	tr := protocol.HandshakeTranscript(protocol.HandshakeRekey, eph.Public(), h.ServerPub, h.Lane, nil)
	k, err := protocol.Rekey(&v.key, eph, h.ServerPub, tr, h.Lane)
	if err != nil {
		return errf(CodeBadInput, "server public key refused")
	}
	if err := protocol.CheckConfirm(&k, tr, h.Confirm); err != nil {
		k.Wipe()
		return errf(CodeBadConfirm, "server key confirmation failed")
	}
	v.wipeKeys()
	v.install(&k, h.Lane, 0)
	k.Wipe()
	v.seq, v.eventSeq = 0, 0
	if h.ServerTime > 0 {
		v.offsetMs = h.ServerTime - v.now().UnixMilli()
	}
	if h.Expires > 0 {
		v.expiresMs = h.Expires
	}
	return nil
}

// install makes k the current epoch key.
func (v *Vault) install(k *protocol.Key, lane protocol.LaneID, epoch uint32) {
	v.lane, v.epoch, v.key = lane, epoch, *k
	sk := protocol.SignKey(k)
	v.signer = protocol.NewSigner(&sk)
	sk.Wipe()
	v.eventKey = protocol.EventKey(k)
}

// SignRequest is a request to sign. Origin is scheme://host[:port] of the target URL as the
// browser resolved it; Path and Query are its escaped path and raw query (without '?').
type SignRequest struct {
	Method  string
	Origin  string
	Path    string
	Query   string
	Body    []byte
	HasBody bool
}

// Signature is what the worker adds to the request.
type Signature struct {
	SignatureInput string
	Signature      string
	ContentDigest  string // "" when the request has no body
}

// Sign signs r if the policy allows it.
func (v *Vault) Sign(r SignRequest) (Signature, error) {
	var out Signature
	if v.state != StateActive && v.state != StateRotating {
		return out, errf(CodeNoSession, "no session")
	}
	if err := v.allowed(r.Method, r.Origin, r.Path); err != nil {
		return out, err
	}
	if len(r.Query) >= protocol.MaxComponentLen { // @query is "?" + query
		return out, errf(CodeTooLarge, "query too long")
	}
	for i := 0; i < len(r.Query); i++ {
		if c := r.Query[i]; c <= 0x20 || c >= 0x7f || c == '#' {
			return out, errf(CodeBadInput, "query must be escaped printable ASCII")
		}
	}
	req := protocol.Request{
		Method:    r.Method,
		Authority: r.Origin[strings.Index(r.Origin, "://")+3:],
		Path:      r.Path,
		Query:     r.Query,
	}
	if r.HasBody {
		out.ContentDigest = protocol.ContentDigest(r.Body)
		req.ContentDigest = out.ContentDigest
	}
	v.seq++
	p := protocol.Params{
		Created: (v.now().UnixMilli() + v.offsetMs) / 1000,
		KeyID:   protocol.KeyID{Lane: v.lane, Epoch: v.epoch},
		Nonce:   v.seq,
	}
	var err error
	out.SignatureInput, out.Signature, err = v.signer.Sign(&req, &p)
	if err != nil {
		return Signature{}, errf(CodeBadInput, "request cannot be signed")
	}
	return out, nil
}

// BeginRotate starts a rotation and returns the new ephemeral public key to send (signed under
// the current epoch) to the rotate endpoint. Called again while rotating, it returns the same key,
// so that a retried request is the same request.
func (v *Vault) BeginRotate() ([protocol.PublicKeySize]byte, error) {
	switch v.state {
	case StateRotating:
		return v.eph.Public(), nil
	case StateActive:
		if v.rekey {
			return [protocol.PublicKeySize]byte{}, errf(CodeBadState, "a re-key is in progress")
		}
	default:
		return [protocol.PublicKeySize]byte{}, errf(CodeNoSession, "no session")
	}
	eph, err := protocol.NewEphemeral(v.rand)
	if err != nil {
		return [protocol.PublicKeySize]byte{}, errf(CodeInternal, "random source failed")
	}
	v.eph, v.state = eph, StateRotating
	return eph.Public(), nil
}

// FinishRotate applies the server's rotate reply: its public key, the new epoch and the key
// confirmation. On a refused key or a mismatch the vault stays on the current epoch, still
// rotating with the same ephemeral key, so that a retry repeats the same request.
func (v *Vault) FinishRotate(serverPub [protocol.PublicKeySize]byte, epoch uint32, confirm []byte) error {
	if v.state != StateRotating || v.eph == nil {
		return errf(CodeBadState, "no rotation in progress")
	}
	if v.epoch == ^uint32(0) || epoch != v.epoch+1 {
		return errf(CodeBadInput, "rotation must advance the epoch by one")
	}
	tr := protocol.RotateTranscript(v.lane, epoch, v.eph.Public(), serverPub)
	own := *v.eph // Ratchet wipes its ephemeral; v.eph stays for a retry until the key is confirmed
	k, err := protocol.Ratchet(&v.key, &own, serverPub, tr, v.lane, epoch)
	if err != nil {
		return errf(CodeBadInput, "server public key refused")
	}
	if err := protocol.CheckConfirm(&k, tr, confirm); err != nil {
		k.Wipe()
		return errf(CodeBadConfirm, "rotation confirmation failed")
	}
	v.eph.Wipe()
	v.eph = nil
	v.prevEvent = v.eventKey
	v.prevUntil = v.now().Add(EventGrace)
	v.signer.Wipe()
	v.key.Wipe()
	v.install(&k, v.lane, epoch)
	k.Wipe()
	v.state = StateActive
	return nil
}

// HandleEvent verifies a sealed event and applies it: revoked and expired wipe the vault; expiring
// records the deadline; rotate is returned for the caller to start a rotation. A forged, foreign,
// stale or replayed event is refused and changes nothing.
func (v *Vault) HandleEvent(b []byte) (protocol.Event, error) {
	if v.state != StateActive && v.state != StateRotating {
		return protocol.Event{}, errf(CodeNoSession, "no session")
	}
	e, err := protocol.ParseEvent(b)
	if err != nil {
		return protocol.Event{}, errf(CodeBadEvent, "event does not parse")
	}
	if e.Lane != v.lane {
		return protocol.Event{}, errf(CodeBadEvent, "event is for another lane")
	}
	var key *protocol.Key
	switch {
	case e.Epoch == v.epoch:
		key = &v.eventKey
	case v.epoch > 0 && e.Epoch == v.epoch-1 && v.now().Before(v.prevUntil):
		key = &v.prevEvent
	default:
		return protocol.Event{}, errf(CodeBadEvent, "event is for an unknown epoch")
	}
	if _, err := protocol.OpenEvent(key, b); err != nil {
		return protocol.Event{}, errf(CodeBadEvent, "event does not verify")
	}
	if e.Seq <= v.eventSeq {
		return protocol.Event{}, errf(CodeReplayedEvent, "event was already seen")
	}
	v.eventSeq = e.Seq
	switch e.Type {
	case protocol.EventRevoked, protocol.EventExpired:
		if v.rekey && e.Type == protocol.EventRevoked && e.Reason == "rekeyed" {
			// The re-key in flight ended the old session, as a re-key does: its reply brings the
			// new lane. Keep the handshake; the caller wipes if that reply fails.
			return e, nil
		}
		v.wipe(e.Reason)
		if v.reason == "" {
			v.reason = e.Type.String()
		}
	case protocol.EventExpiring:
		if e.Deadline > 0 {
			v.expiresMs = e.Deadline
		}
	}
	return e, nil
}

// SocketAuth answers an event-socket challenge with a MAC under the current sign key.
func (v *Vault) SocketAuth(challenge []byte) (protocol.KeyID, [protocol.TagSize]byte, error) {
	if v.state != StateActive && v.state != StateRotating {
		return protocol.KeyID{}, [protocol.TagSize]byte{}, errf(CodeNoSession, "no session")
	}
	if len(challenge) < 16 || len(challenge) > 64 {
		return protocol.KeyID{}, [protocol.TagSize]byte{}, errf(CodeBadInput, "challenge must be 16 to 64 bytes")
	}
	sk := protocol.SignKey(&v.key)
	tag := protocol.SocketAuth(&sk, v.lane, v.epoch, challenge)
	sk.Wipe()
	return protocol.KeyID{Lane: v.lane, Epoch: v.epoch}, tag, nil
}

// Status is the vault's public state.
type Status struct {
	State     State
	Epoch     uint32
	ExpiresMs int64  // absolute deadline on the server's clock, 0 if unknown
	OffsetMs  int64  // server clock minus local clock
	Reason    string // why the vault was wiped
}

// Status returns the public state.
func (v *Vault) Status() Status {
	return Status{State: v.state, Epoch: v.epoch, ExpiresMs: v.expiresMs, OffsetMs: v.offsetMs, Reason: v.reason}
}

// Wipe zeroes every key and ends the session; the policy stays bound.
func (v *Vault) Wipe() { v.wipe("logout") }

func (v *Vault) wipe(reason string) {
	v.wipeKeys()
	if v.state != StateEmpty || reason != "logout" {
		v.state = StateWiped
		v.reason = reason
	}
}

func (v *Vault) wipeKeys() {
	v.key.Wipe()
	v.eventKey.Wipe()
	v.prevEvent.Wipe()
	v.prevUntil = time.Time{}
	if v.signer != nil {
		v.signer.Wipe()
		v.signer = nil
	}
	if v.eph != nil {
		v.eph.Wipe()
		v.eph = nil
	}
	v.rekey = false
	clear(v.ticket)
	v.ticket = nil
	v.lane = protocol.LaneID{}
	v.epoch = 0
}
