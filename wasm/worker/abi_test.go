//go:build !wasm

package main

import (
	"testing"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
)

// Helpers to build ABI requests and read replies (PROTOCOL.md section 7).

type field struct {
	tag byte
	val []byte
}

func f(tag byte, v []byte) field    { return field{tag, v} }
func fs(tag byte, v string) field   { return field{tag, []byte(v)} }
func fu(tag byte, n uint64) field   { return field{tag, protocol.AppendUintField(nil, 0, n)[2:]} }
func fl(tag byte, l []string) field { return field{tag, protocol.AppendList(nil, l)} }

// req encodes an ABI request; fields must be in increasing tag order.
func req(op byte, fields ...field) []byte {
	m := protocol.Message{Code: op}
	for _, x := range fields {
		m.Fields = append(m.Fields, protocol.Field{Tag: x.tag, Value: x.val})
	}
	return m.Append(nil)
}

// reply is a decoded ABI reply.
type reply struct {
	protocol.Message
	raw []byte
}

func decodeReply(tb testing.TB, b []byte) reply {
	tb.Helper()
	m, err := protocol.DecodeMessage(b)
	if err != nil {
		tb.Fatalf("reply %x does not decode: %v", b, err)
	}
	return reply{m, b}
}

// code is the reply's error code, "" on success.
func (r reply) code() string { return vault.CodeOf(r.Code) }

func (r reply) str(tag byte) string {
	v, _ := r.Get(tag)
	return string(v)
}

func (r reply) uint(tb testing.TB, tag byte) uint64 {
	tb.Helper()
	n, ok, err := r.Uint(tag)
	if !ok || err != nil {
		tb.Fatalf("reply %x: field %d: %v %v", r.raw, tag, ok, err)
	}
	return n
}

// mustOK runs request q and fails unless it succeeds.
func (in *instance) mustOK(tb testing.TB, q []byte) reply {
	tb.Helper()
	b, err := in.Call(q)
	if err != nil {
		tb.Fatal(err)
	}
	return checkOK(tb, b)
}

// mustCode runs request q and fails unless it returns the error code want.
func (in *instance) mustCode(tb testing.TB, want string, q []byte) reply {
	tb.Helper()
	b, err := in.Call(q)
	if err != nil {
		tb.Fatal(err)
	}
	return checkCode(tb, want, b)
}

// checkOK decodes b and fails unless it is a success.
func checkOK(tb testing.TB, b []byte) reply {
	tb.Helper()
	r := decodeReply(tb, b)
	if r.Code != 0 {
		tb.Fatalf("want success, got %s: %q", r.code(), r.str(1))
	}
	return r
}

// checkCode decodes b and fails unless it carries the error code want.
func checkCode(tb testing.TB, want string, b []byte) reply {
	tb.Helper()
	r := decodeReply(tb, b)
	if r.code() != want || want == "" {
		tb.Fatalf("want %s, got %q (%q)", want, r.code(), r.str(1))
	}
	return r
}
