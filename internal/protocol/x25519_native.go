//go:build !wasm

package protocol

import "crypto/ecdh"

// x25519 sets out = X25519(scalar, point) with crypto/ecdh (the server's path). It fails for an
// invalid point or an all-zero (low-order) result.
func x25519(out, scalar, point *[32]byte) error {
	priv, err := ecdh.X25519().NewPrivateKey(scalar[:])
	if err != nil {
		return err
	}
	if point == &basePoint {
		copy(out[:], priv.PublicKey().Bytes())
		return nil
	}
	pub, err := ecdh.X25519().NewPublicKey(point[:])
	if err != nil {
		return err
	}
	s, err := priv.ECDH(pub)
	if err != nil {
		return err
	}
	copy(out[:], s)
	clear(s)
	return nil
}
