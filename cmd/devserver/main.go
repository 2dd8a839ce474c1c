// Command devserver runs the Sessionvault demo: a single-page app whose every API call is signed
// by the wasm vault in a Web Worker, an admin view with live sessions and audit events, and all
// session endpoints, on an embedded durable store.
//
//	go run ./cmd/devserver                 # http://127.0.0.1:8080, bolt store in ./.devdata
//	go run ./cmd/devserver -h              # flags
//
// Several nodes share sessions and revocations through Redis: give each the same -store URL and
// the same -store-key-file (README.md, "Two nodes").
//
// It builds the wasm module itself with the Go toolchain (only when a source file changed), so a
// fresh clone needs nothing but Go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sessionvault/sessionvault/internal/demo"
)

func main() {
	fs := flag.NewFlagSet("devserver", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `devserver: the Sessionvault demo.

Usage: go run ./cmd/devserver [flags]

Serves the demo app (/), the admin view (/admin), the session endpoints (/sv/) and the worker
assets (/sv/worker.js, /sv/vault.wasm, /sv/client.js). Demo users: alice, bob, admin; their passwords are
"<user>-password".

Flags:
`)
		fs.PrintDefaults()
	}
	var o options
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address (host:port)")
	fs.StringVar(&o.data, "data", ".devdata", "data directory: the bolt store, the store key and the wasm build cache")
	fs.StringVar(&o.store, "store", "bolt", `session store: "bolt" (durable, in the data directory), "mem" (lost on exit), or a Redis URL such as redis://127.0.0.1:6379/0 (shared by every node given it)`)
	fs.StringVar(&o.storeKeyFile, "store-key-file", "", "file of the 32-byte key sealing lane keys at rest, made if missing; nodes sharing a Redis must share it (default: store.key in the data directory)")
	fs.DurationVar(&o.rotateEvery, "rotate-every", 10*time.Minute, "key age after which a lane is asked to rotate")
	fs.DurationVar(&o.idle, "idle-timeout", 30*time.Minute, "idle timeout of a session")
	fs.StringVar(&o.wasm, "wasm", "", "serve this prebuilt vault.wasm instead of building one")
	fs.Parse(os.Args[1:])

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, logger, nil); err != nil {
		logger.Error("devserver failed", "err", err)
		os.Exit(1)
	}
}

type options struct {
	addr, data, store, wasm string
	storeKeyFile            string
	rotateEvery, idle       time.Duration
}

// run serves until ctx ends. ready, if not nil, receives the listening address.
func run(ctx context.Context, o options, logger *slog.Logger, ready chan<- string) error {
	if err := os.MkdirAll(o.data, 0o700); err != nil {
		return err
	}
	wasmPath := o.wasm
	if wasmPath == "" {
		var err error
		if wasmPath, err = demo.BuildWasm(filepath.Join(o.data, "vault.wasm"), logger); err != nil {
			return err
		}
	}
	app, err := demo.New(demo.Options{Data: o.data, Store: o.store, StoreKeyFile: o.storeKeyFile, WasmPath: wasmPath, RotateEvery: o.rotateEvery, IdleTimeout: o.idle})
	if err != nil {
		return err
	}
	defer app.Close()

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	logger.Info("sessionvault demo ready", "url", "http://"+ln.Addr().String()+"/", "store", demo.RedactURL(o.store), "data", o.data)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
	return nil
}
