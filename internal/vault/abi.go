package vault

import (
	"github.com/sessionvault/sessionvault/internal/protocol"
)

// ABIVersion names the ABI below (its ops, fields and meanings). The module exports a function
// named ABIExport, which the server (Config.Module) and the worker's host check before using
// a module, so that a vault.wasm built from another version of this repository is refused with
// a message saying so, not with "unexpected field" at the first call. Any change to an op's
// fields or meaning, or to the exports, takes a new version: change it here, in the
// //go:wasmexport directive of wasm/worker (its tests check the module), and in js/abi.js (a
// test in js checks they agree).
const (
	ABIVersion = 2
	ABIExport  = "sessionvault_abi_2"
	// ABIExportPrefix starts the version export of every versioned module.
	ABIExportPrefix = "sessionvault_abi_"
)

// ABI operations (PROTOCOL.md section 7). The request's code byte is the op; the reply's is the
// status (0 ok, otherwise [StatusOf] an error code, with the message in field 1).
const (
	OpPolicy       = 0x01 // 1 self, 2 origins (list), 3 prefixes (list), 4 methods (list), 5 endpoints (list) -> -
	OpBegin        = 0x02 // 1 kind (1 login, 2 join, 3 rekey) -> 1 public key
	OpFinish       = 0x03 // 1 lane, 2 server public, 3 confirm, 4 server time ms, 5 expires ms, 6 ticket -> 1 state, 2 epoch
	OpSign         = 0x04 // 1 method, 2 origin, 3 path, 4 query, 5 body (present iff the request has one) -> 1 signature-input, 2 signature, 3 content-digest
	OpRotateBegin  = 0x05 // - -> 1 public key
	OpRotateFinish = 0x06 // 1 server public, 2 epoch, 3 confirm -> 1 state, 2 epoch
	OpEvent        = 0x07 // 1 sealed event -> 1 type, 2 reason, 3 deadline ms, 4 state
	OpSocketAuth   = 0x08 // 1 challenge -> 1 keyid, 2 tag
	OpStatus       = 0x09 // - -> 1 state, 2 epoch, 3 expires ms, 4 offset ms (zigzag), 5 reason
	OpWipe         = 0x0a // - -> 1 state, 2 epoch (0)
	OpAbortRekey   = 0x0b // - -> 1 state, 2 epoch
)

// Call decodes one ABI request, runs it and encodes the reply. It never panics on any input and
// never returns key material. Failed operations change nothing (except where documented: a failed
// handshake confirmation returns the vault to empty).
func (v *Vault) Call(in []byte) []byte {
	m, err := protocol.DecodeMessage(in)
	if err != nil {
		code := CodeBadMessage
		if protocol.ErrorClass(err) == "too_large" {
			code = CodeTooLarge
		}
		return errorReply(errf(code, "message does not decode"))
	}
	out, verr := v.dispatch(&m)
	if verr != nil {
		return errorReply(verr)
	}
	return out
}

func errorReply(e *Error) []byte {
	r := protocol.Message{Code: StatusOf(e.Code)}
	b := r.Append(make([]byte, 0, 8+len(e.Message)))
	return protocol.AppendStringField(b, 1, e.Message)
}

func okReply() []byte { return []byte{protocol.CodecVersion, 0} }

// fields checks that m has no tags outside allowed (a bit set of tag numbers).
func fields(m *protocol.Message, allowed uint32) *Error {
	for _, f := range m.Fields {
		if f.Tag >= 32 || allowed&(1<<f.Tag) == 0 {
			return errf(CodeBadInput, "unexpected field")
		}
	}
	return nil
}

func bits(tags ...byte) uint32 {
	var b uint32
	for _, t := range tags {
		b |= 1 << t
	}
	return b
}

func str(m *protocol.Message, tag byte, max int, required bool) (string, *Error) {
	v, ok := m.Get(tag)
	if !ok {
		if required {
			return "", errf(CodeBadInput, "missing field")
		}
		return "", nil
	}
	if len(v) > max {
		return "", errf(CodeTooLarge, "field too long")
	}
	return string(v), nil
}

func fixed(m *protocol.Message, tag byte, n int) ([]byte, *Error) {
	v, ok := m.Get(tag)
	if !ok {
		return nil, errf(CodeBadInput, "missing field")
	}
	if len(v) != n {
		return nil, errf(CodeBadInput, "field has the wrong length")
	}
	return v, nil
}

func num(m *protocol.Message, tag byte, required bool) (uint64, *Error) {
	n, ok, err := m.Uint(tag)
	if err != nil {
		return 0, errf(CodeBadInput, "bad integer field")
	}
	if !ok && required {
		return 0, errf(CodeBadInput, "missing field")
	}
	return n, nil
}

func list(m *protocol.Message, tag byte) ([]string, *Error) {
	v, ok := m.Get(tag)
	if !ok {
		return nil, nil
	}
	l, err := protocol.SplitList(v, maxPolicyItems)
	if err != nil {
		return nil, errf(CodeBadInput, "bad list field")
	}
	return l, nil
}

func asError(err error) *Error {
	if e, ok := err.(*Error); ok {
		return e
	}
	return errf(CodeInternal, "unexpected failure")
}

func (v *Vault) dispatch(m *protocol.Message) ([]byte, *Error) {
	reply := func() []byte { return make([]byte, 2, 128) }
	switch m.Code {
	case OpPolicy:
		if e := fields(m, bits(1, 2, 3, 4, 5)); e != nil {
			return nil, e
		}
		var p Policy
		var e *Error
		if p.Self, e = str(m, 1, maxPolicyItem, true); e != nil {
			return nil, e
		}
		if p.Origins, e = list(m, 2); e != nil {
			return nil, e
		}
		if p.Prefixes, e = list(m, 3); e != nil {
			return nil, e
		}
		if p.Methods, e = list(m, 4); e != nil {
			return nil, e
		}
		if p.Endpoints, e = list(m, 5); e != nil {
			return nil, e
		}
		if err := v.BindPolicy(p); err != nil {
			return nil, asError(err)
		}
		return okReply(), nil

	case OpBegin:
		if e := fields(m, bits(1)); e != nil {
			return nil, e
		}
		kind, e := num(m, 1, true)
		if e != nil {
			return nil, e
		}
		if kind > 3 {
			return nil, errf(CodeBadInput, "unknown handshake kind")
		}
		pub, err := v.Begin(int(kind))
		if err != nil {
			return nil, asError(err)
		}
		b := reply()
		b[0] = protocol.CodecVersion
		return protocol.AppendField(b, 1, pub[:]), nil

	case OpFinish:
		if e := fields(m, bits(1, 2, 3, 4, 5, 6)); e != nil {
			return nil, e
		}
		var h Handshake
		lane, e := fixed(m, 1, protocol.LaneIDSize)
		if e != nil {
			return nil, e
		}
		copy(h.Lane[:], lane)
		pub, e := fixed(m, 2, protocol.PublicKeySize)
		if e != nil {
			return nil, e
		}
		copy(h.ServerPub[:], pub)
		if h.Confirm, e = fixed(m, 3, protocol.TagSize); e != nil {
			return nil, e
		}
		st, e := num(m, 4, true)
		if e != nil {
			return nil, e
		}
		exp, e := num(m, 5, false)
		if e != nil {
			return nil, e
		}
		if st > 1<<53 || exp > 1<<53 {
			return nil, errf(CodeBadInput, "time out of range")
		}
		h.ServerTime, h.Expires = int64(st), int64(exp)
		if t, ok := m.Get(6); ok {
			if len(t) == 0 || len(t) > 256 {
				return nil, errf(CodeBadInput, "bad ticket")
			}
			h.Ticket = t
		}
		if err := v.Finish(h); err != nil {
			return nil, asError(err)
		}
		return v.stateReply(), nil

	case OpSign:
		if e := fields(m, bits(1, 2, 3, 4, 5)); e != nil {
			return nil, e
		}
		var r SignRequest
		var e *Error
		if r.Method, e = str(m, 1, 16, true); e != nil {
			return nil, e
		}
		if r.Origin, e = str(m, 2, maxPolicyItem, true); e != nil {
			return nil, e
		}
		if r.Path, e = str(m, 3, protocol.MaxComponentLen, true); e != nil {
			return nil, e
		}
		if r.Query, e = str(m, 4, protocol.MaxComponentLen, false); e != nil {
			return nil, e
		}
		r.Body, r.HasBody = m.Get(5)
		s, err := v.Sign(r)
		if err != nil {
			return nil, asError(err)
		}
		b := make([]byte, 2, 16+len(s.SignatureInput)+len(s.Signature)+len(s.ContentDigest))
		b[0] = protocol.CodecVersion
		b = protocol.AppendStringField(b, 1, s.SignatureInput)
		b = protocol.AppendStringField(b, 2, s.Signature)
		if s.ContentDigest != "" {
			b = protocol.AppendStringField(b, 3, s.ContentDigest)
		}
		return b, nil

	case OpRotateBegin:
		if e := fields(m, 0); e != nil {
			return nil, e
		}
		pub, err := v.BeginRotate()
		if err != nil {
			return nil, asError(err)
		}
		b := reply()
		b[0] = protocol.CodecVersion
		return protocol.AppendField(b, 1, pub[:]), nil

	case OpRotateFinish:
		if e := fields(m, bits(1, 2, 3)); e != nil {
			return nil, e
		}
		pub, e := fixed(m, 1, protocol.PublicKeySize)
		if e != nil {
			return nil, e
		}
		epoch, e := num(m, 2, true)
		if e != nil {
			return nil, e
		}
		if epoch > 0xffffffff {
			return nil, errf(CodeBadInput, "epoch out of range")
		}
		confirm, e := fixed(m, 3, protocol.TagSize)
		if e != nil {
			return nil, e
		}
		var sp [protocol.PublicKeySize]byte
		copy(sp[:], pub)
		if err := v.FinishRotate(sp, uint32(epoch), confirm); err != nil {
			return nil, asError(err)
		}
		return v.stateReply(), nil

	case OpEvent:
		if e := fields(m, bits(1)); e != nil {
			return nil, e
		}
		raw, ok := m.Get(1)
		if !ok {
			return nil, errf(CodeBadInput, "missing field")
		}
		ev, err := v.HandleEvent(raw)
		if err != nil {
			return nil, asError(err)
		}
		b := reply()
		b[0] = protocol.CodecVersion
		b = protocol.AppendUintField(b, 1, uint64(ev.Type))
		b = protocol.AppendStringField(b, 2, ev.Reason)
		if ev.Deadline > 0 {
			b = protocol.AppendUintField(b, 3, uint64(ev.Deadline))
		}
		return protocol.AppendUintField(b, 4, uint64(v.state)), nil

	case OpSocketAuth:
		if e := fields(m, bits(1)); e != nil {
			return nil, e
		}
		ch, ok := m.Get(1)
		if !ok {
			return nil, errf(CodeBadInput, "missing field")
		}
		id, tag, err := v.SocketAuth(ch)
		if err != nil {
			return nil, asError(err)
		}
		b := reply()
		b[0] = protocol.CodecVersion
		b = protocol.AppendField(b, 1, protocol.AppendKeyID(nil, id))
		return protocol.AppendField(b, 2, tag[:]), nil

	case OpStatus:
		if e := fields(m, 0); e != nil {
			return nil, e
		}
		s := v.Status()
		b := reply()
		b[0] = protocol.CodecVersion
		b = protocol.AppendUintField(b, 1, uint64(s.State))
		b = protocol.AppendUintField(b, 2, uint64(s.Epoch))
		b = protocol.AppendUintField(b, 3, uint64(max(s.ExpiresMs, 0)))
		b = protocol.AppendUintField(b, 4, zigzag(s.OffsetMs))
		if s.Reason != "" {
			b = protocol.AppendStringField(b, 5, s.Reason)
		}
		return b, nil

	case OpWipe:
		if e := fields(m, 0); e != nil {
			return nil, e
		}
		v.Wipe()
		return v.stateReply(), nil

	case OpAbortRekey:
		if e := fields(m, 0); e != nil {
			return nil, e
		}
		v.AbortRekey()
		return v.stateReply(), nil
	}
	return nil, errf(CodeUnknownOp, "unknown operation")
}

func (v *Vault) stateReply() []byte {
	b := []byte{protocol.CodecVersion, 0}
	b = protocol.AppendUintField(b, 1, uint64(v.state))
	return protocol.AppendUintField(b, 2, uint64(v.epoch))
}

func zigzag(n int64) uint64 { return uint64(n<<1) ^ uint64(n>>63) }
