// Package server is Sessionvault's server library: it issues lane keys at login (X25519 key
// agreement, so the key never travels), verifies every signed request (RFC 9421 hmac-sha256,
// replay-proof), rotates and re-keys, and revokes.
//
// (Package documentation with Security, Concurrency and Errors sections lands with the manager.)
package server
