//go:build !wasm

package protocol

import (
	"crypto/sha256"
	"crypto/subtle"
)

// The server's SHA-256 and constant-time compare: the standard library's, which uses the CPU's
// SHA instructions (sha256.go has the module's, and why).

func newSHA256() stateHash { return sha256.New().(stateHash) }

func sum256(p []byte) [sha256Size]byte { return sha256.Sum256(p) }

func ctEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
