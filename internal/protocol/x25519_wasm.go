//go:build wasm

package protocol

// x25519 sets out = X25519(scalar, point) with the compact implementation (the wasm module's
// path, see x25519.go). It fails for an all-zero (low-order) result, as crypto/ecdh does.
func x25519(out, scalar, point *[32]byte) error {
	x25519Compact(out, scalar, point)
	var zero [32]byte
	if ctEqual(out[:], zero[:]) {
		return ErrKeyAgreement
	}
	return nil
}
