//go:build wasm

package protocol

// The wasm module uses the plain-Go SHA-256 and compare of sha256.go: see there for why.

func newSHA256() stateHash { return newSHA256Generic() }

func sum256(p []byte) [sha256Size]byte { return sum256Generic(p) }

func ctEqual(a, b []byte) bool { return ctEqualGeneric(a, b) }
