package main

import (
	"io"
	"os"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the child hub process.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(hubMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

func TestSmoke(t *testing.T) {
	res, err := run(options{n: 100, dialers: 8, rounds: 2, timeout: time.Minute}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := res.perConn()
	if res.full.count != 100 || len(res.rounds) != 2 || hs <= 0 || res.rounds[0].all <= 0 {
		t.Fatalf("%+v", res)
	}
	res.print(io.Discard)
	t.Logf("%.1f KB per connection, broadcast %v", hs/1000, res.rounds[1].all)
}
