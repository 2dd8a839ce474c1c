package protocol

// EventType is the kind of a server-to-worker event.
type EventType uint8

// Event types (PROTOCOL.md section 6).
const (
	EventRevoked  EventType = 1 // the session is gone: wipe
	EventRotate   EventType = 2 // rotate now
	EventExpiring EventType = 3 // Deadline says when the session will expire
	EventExpired  EventType = 4 // the session expired: wipe
)

// String returns the event's name as the page sees it.
func (t EventType) String() string {
	switch t {
	case EventRevoked:
		return "revoked"
	case EventRotate:
		return "rotate"
	case EventExpiring:
		return "expiring"
	case EventExpired:
		return "expired"
	}
	return "unknown"
}

const (
	eventVersion   = 1
	eventFixedSize = 1 + 1 + LaneIDSize + 4 + 8 + 8 + 8 + 1
	// MaxReasonLen bounds an event's reason.
	MaxReasonLen = 64
	// MaxEventSize is the largest sealed event.
	MaxEventSize = eventFixedSize + MaxReasonLen + TagSize
)

// Event is one server-to-worker event. On the wire (all integers big-endian):
//
//	0x01 | type u8 | lane [16] | epoch u32 | seq u64 | time i64 (Unix ms) | deadline i64 (Unix ms, 0 if none) | reason len u8 | reason | tag [32]
//
// tag = HMAC(EventKey(K(epoch)), "sessionvault/v1 event-mac" || 0x00 || everything before the tag).
type Event struct {
	Type     EventType
	Lane     LaneID
	Epoch    uint32
	Seq      uint64 // per lane, strictly increasing; the worker drops an event whose Seq is not above the last
	Time     int64
	Deadline int64
	Reason   string // ASCII token such as "logout", "admin", "reuse_detected"
}

func (e *Event) appendBody(b []byte) []byte {
	b = append(b, eventVersion, byte(e.Type))
	b = append(b, e.Lane[:]...)
	b = appendU32(b, e.Epoch)
	b = appendU64(b, e.Seq)
	b = appendU64(b, uint64(e.Time))
	b = appendU64(b, uint64(e.Deadline))
	b = append(b, byte(len(e.Reason)))
	return append(b, e.Reason...)
}

func eventTag(eventKey *Key, body []byte) [TagSize]byte {
	return macOnce(eventKey, []byte(labelEventMAC), []byte{0}, body)
}

// SealEvent encodes e and appends its tag under eventKey ([EventKey] of e.Epoch's key).
func SealEvent(eventKey *Key, e *Event) ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	b := e.appendBody(make([]byte, 0, eventFixedSize+len(e.Reason)+TagSize))
	tag := eventTag(eventKey, b)
	return append(b, tag[:]...), nil
}

func (e *Event) check() error {
	if e.Type < EventRevoked || e.Type > EventExpired {
		return &parseError{what: "event: unknown type", class: ErrMalformed}
	}
	if len(e.Reason) > MaxReasonLen {
		return &parseError{what: "event: reason too long", class: ErrTooLarge}
	}
	for i := 0; i < len(e.Reason); i++ {
		if c := e.Reason[i]; !(isLcalpha(c) || isDigit(c) || c == '_') {
			return &parseError{what: "event: reason must be [a-z0-9_]", class: ErrMalformed}
		}
	}
	return nil
}

// ParseEvent decodes a sealed event without checking its tag; call [OpenEvent] to check it.
func ParseEvent(b []byte) (Event, error) {
	var e Event
	if len(b) < eventFixedSize+TagSize {
		return e, &parseError{what: "event: truncated", offset: len(b), class: ErrMalformed}
	}
	if len(b) > MaxEventSize {
		return e, &parseError{what: "event: too long", offset: len(b), class: ErrTooLarge}
	}
	if b[0] != eventVersion {
		return e, &parseError{what: "event: unknown version", class: ErrMalformed}
	}
	e.Type = EventType(b[1])
	copy(e.Lane[:], b[2:18])
	e.Epoch = getU32(b[18:])
	e.Seq = getU64(b[22:])
	e.Time = int64(getU64(b[30:]))
	e.Deadline = int64(getU64(b[38:]))
	n := int(b[46])
	if len(b) != eventFixedSize+n+TagSize {
		return e, &parseError{what: "event: length does not match reason length", offset: 46, class: ErrMalformed}
	}
	e.Reason = string(b[eventFixedSize : eventFixedSize+n])
	if err := e.check(); err != nil {
		return e, err
	}
	return e, nil
}

// OpenEvent checks the tag of a sealed event under eventKey and returns the event.
func OpenEvent(eventKey *Key, b []byte) (Event, error) {
	e, err := ParseEvent(b)
	if err != nil {
		return e, err
	}
	body, tag := b[:len(b)-TagSize], b[len(b)-TagSize:]
	want := eventTag(eventKey, body)
	if !ctEqual(want[:], tag) {
		return Event{}, &parseError{what: "event: tag does not verify", class: ErrBadSignature}
	}
	return e, nil
}
