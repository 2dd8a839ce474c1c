package main

import (
	"io"
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	for _, body := range []int{0, 512} {
		res, err := run(200*time.Millisecond, 4, 1, 100_000, body, body > 0, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if res.plain <= 0 || res.signed <= 0 {
			t.Fatalf("%+v", res)
		}
	}
}
