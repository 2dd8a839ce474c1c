package vault

// Error codes, as the page sees them in {code, message}. Each has a fixed ABI status byte.
const (
	CodeBadMessage    = "bad_message"    // the ABI message does not decode
	CodeUnknownOp     = "unknown_op"     // no such operation
	CodeBadState      = "bad_state"      // the operation is not allowed in the current state
	CodePolicyBound   = "policy_bound"   // the policy was already bound
	CodePolicyDenied  = "policy_denied"  // the request is outside the policy
	CodeNoSession     = "no_session"     // no key is held
	CodeBadInput      = "bad_input"      // a field is missing, of the wrong type or invalid
	CodeBadConfirm    = "bad_confirm"    // the server's key confirmation did not match
	CodeBadEvent      = "bad_event"      // an event was forged, foreign or malformed
	CodeReplayedEvent = "replayed_event" // an event was seen before
	CodeTooLarge      = "too_large"      // an input exceeds a limit
	CodeInternal      = "internal"       // a recovered fault; the instance should be replaced
)

// codes lists the codes in status-byte order (status = index + 1; 0 is success).
var codes = [...]string{
	CodeBadMessage, CodeUnknownOp, CodeBadState, CodePolicyBound, CodePolicyDenied, CodeNoSession,
	CodeBadInput, CodeBadConfirm, CodeBadEvent, CodeReplayedEvent, CodeTooLarge, CodeInternal,
}

// StatusOf returns the ABI status byte of a code.
func StatusOf(code string) byte {
	for i, c := range codes {
		if c == code {
			return byte(i + 1)
		}
	}
	return byte(len(codes)) // internal
}

// CodeOf returns the code of an ABI status byte ("" for success, internal for unknown bytes).
func CodeOf(status byte) string {
	if status == 0 {
		return ""
	}
	if int(status) <= len(codes) {
		return codes[status-1]
	}
	return CodeInternal
}

// Error is the vault's error type. Message is fixed text written by this package: it never
// quotes input, so it can never carry key material or a ticket.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return "vault: " + e.Code + ": " + e.Message }

// Is reports whether target is an *Error with the same code, so errors.Is(err, &Error{Code: c}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

func errf(code, msg string) *Error { return &Error{Code: code, Message: msg} }
