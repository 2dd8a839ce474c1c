// Package protocol is the one implementation of the Sessionvault wire protocol, shared by the
// worker's wasm module and the server: X25519 key agreement with transcript binding, the epoch key
// schedule and its rotation ratchet, the RFC 9421 hmac-sha256 signature profile with a strict RFC
// 8941 structured-field parser, RFC 9530 content digests, event MACs, and the worker ABI codec.
// PROTOCOL.md at the repository root is the normative description; testdata/ holds its vectors.
//
// # Security
//
// The package does no I/O and keeps no global state. Secrets are [Key] values (fixed arrays the
// caller owns and wipes) and [MAC], [Signer] and [Verifier] objects whose Wipe zeroes every
// key-derived byte they hold. Error messages quote public input only (headers, ABI bytes), never
// key material. All tag comparisons are constant time.
//
// # Concurrency
//
// Functions are safe for concurrent use. [MAC], [Signer] and [Verifier] values are not: give each
// goroutine its own, or guard one with a mutex.
//
// # Errors
//
// Every error wraps exactly one class sentinel ([ErrMalformed], [ErrProfile], [ErrBadSignature],
// [ErrExpired], [ErrFuture], [ErrDigest], [ErrKeyAgreement], [ErrTooLarge]); branch with
// errors.Is. [ErrorClass] names the class as the vectors do.
//
// The package imports only the standard library and avoids fmt, strconv-heavy paths and
// encoding/json, because every byte it pulls in is downloaded by every browser.
package protocol
