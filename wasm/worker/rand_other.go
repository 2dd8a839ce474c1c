//go:build !wasip1

package main

import "crypto/rand"

// wasiRandom on a native build (only the tests compile this package natively) is crypto/rand.
type wasiRandom struct{}

func (wasiRandom) Read(p []byte) (int, error) { return rand.Read(p) }
