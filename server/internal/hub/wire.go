package hub

import (
	"encoding/base64"
	"encoding/json"
	"errors"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// Subprotocol is the WebSocket subprotocol the client MUST offer; the hub selects it.
const Subprotocol = "sessionvault.v1"

// ChallengeSize is the length of the server challenge (PROTOCOL.md section 6 allows 16 to 64).
const ChallengeSize = 32

const (
	maxKeyIDLen  = 64 // "<22 chars>.<at most 10 digits>" is 33
	maxReasonLen = protocol.MaxReasonLen
	msgReady     = `{"type":"ready"}`
	// reasonRefused is sent when Authenticate fails without naming a reason (the same word the
	// worker uses for a refusal it cannot read).
	reasonRefused    = "refused"
	reasonBadRequest = "bad_request"
	reasonTimeout    = "timeout"
	reasonShutdown   = "shutdown"
	reasonUnavail    = "unavailable"
	// reasonRateLimited refuses an upgrade of a client that holds MaxUnsettled connections.
	reasonRateLimited = "rate_limited"
	// reasonReplaced closes a lane's oldest connection when a newer one would exceed
	// MaxConnsPerLane; it is no refusal (the worker reconnects if it is still there).
	reasonReplaced = "replaced"
)

// MaxConnsPerLane bounds one lane's authenticated connections on a node. A worker holds one
// (a second only while a reconnect overlaps a dead socket's last seconds); without a bound, the
// holder of one lane's key could take every slot of MaxConns and silence everyone's revocations.
const MaxConnsPerLane = 4

var errBadAuth = errors.New("hub: malformed auth message")

// auth is the client's answer to the challenge.
type auth struct {
	keyid string
	tag   []byte // protocol.TagSize bytes
	since uint64
}

// parseAuth decodes {"type":"auth","keyid":"<lane>.<epoch>","tag":"<b64url>","since":<n>}.
// keyid is only bounded in length and character set here; Config.Authenticate parses it. since
// is optional (0). Unknown members are ignored, so that a later version can add some.
func parseAuth(b []byte) (auth, error) {
	var m struct {
		Type  string  `json:"type"`
		KeyID string  `json:"keyid"`
		Tag   string  `json:"tag"`
		Since *uint64 `json:"since"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return auth{}, errBadAuth
	}
	if m.Type != "auth" || m.KeyID == "" || len(m.KeyID) > maxKeyIDLen || !isKeyIDChars(m.KeyID) {
		return auth{}, errBadAuth
	}
	if base64.RawURLEncoding.DecodedLen(len(m.Tag)) != protocol.TagSize {
		return auth{}, errBadAuth
	}
	tag, err := base64.RawURLEncoding.Strict().DecodeString(m.Tag)
	if err != nil || len(tag) != protocol.TagSize {
		return auth{}, errBadAuth
	}
	a := auth{keyid: m.KeyID, tag: tag}
	if m.Since != nil {
		a.since = *m.Since
	}
	return a, nil
}

// isKeyIDChars reports whether s holds only base64url characters and dots.
func isKeyIDChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// validReason reports whether s is a refusal reason that can go on the wire unescaped:
// 1 to 64 characters of [a-z0-9_], like an event reason.
func validReason(s string) bool {
	if s == "" || len(s) > maxReasonLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func challengeMsg(challenge []byte) []byte {
	b := make([]byte, 0, 40+base64.RawURLEncoding.EncodedLen(len(challenge)))
	b = append(b, `{"type":"challenge","challenge":"`...)
	b = base64.RawURLEncoding.AppendEncode(b, challenge)
	return append(b, `"}`...)
}

// refusedMsg encodes {"type":"refused","reason":reason}; reason must satisfy validReason.
func refusedMsg(reason string) []byte {
	return []byte(`{"type":"refused","reason":"` + reason + `"}`)
}
