// Package e2e holds Sessionvault's end-to-end tests in real headless Chromium
// (Debian's chromium package, driven by chromedp over a pipe), security tests
// included. It has no exported API: everything lives in _test.go files.
//
//	go test ./e2e/                     # as make test runs it, with SV_WASM set
//	SV_STRICT=1 go test ./e2e/         # CI: a missing Chromium fails, not skips
//
// # The harness
//
// TestMain starts one browser and one HTTP server for the package. Each test
// opens its own tab in a fresh browser context (newTab; Tab.Sibling for a
// second tab of the same user), and everything the tab does is recorded:
//
//   - console calls, uncaught exceptions and browser log entries of the page
//     and of every worker, as t.Log lines and in Tab.Console;
//   - CSP violations (Tab.CSPViolations), from a securitypolicyviolation
//     listener injected into every document, DevTools issues, console
//     messages and the server's report-uri endpoint;
//   - all network traffic of the page and of its workers (Tab.Traffic):
//     headers as sent and received (cookies included), request and response
//     bodies, WebSocket frames; Traffic.Blob is all of it as one byte string;
//   - every message the page reads from a worker (Tab.WorkerMessages), typed
//     arrays included.
//
// Workers are attached before their first instruction runs (Target.setAutoAttach
// with waitForDebuggerOnStart), so nothing they log or fetch escapes. A
// Session is one DevTools session, the page's or a worker's (Tab.Worker); it
// evaluates JavaScript (Session.Eval, Eval, EvalIn), takes heap snapshots
// (Session.HeapSnapshot) and dumps what is reachable from its global
// (Session.GlobalsDump). It satisfies cdp.Session, so any typed cdproto
// command runs on it.
//
// Secrets are searched for with Find, FindIn and HeapSnapshot.Find, in every
// encoding that Encodings lists. Every search has a positive control:
// Session.PlantSecret makes the isolate hold a random value in the forms a
// leak would take, and the same search must find it (HeapSnapshot.CheckPlanted).
//
// # Environment
//
//   - SV_STRICT=1: fail, not skip, when Chromium is missing.
//   - SV_WASM: the vault.wasm to serve. Without it the tests use
//     build/vault.wasm when it is newer than every Go file it is built from,
//     and otherwise build a fresh one (never a stale module).
//   - SV_CHROMIUM: the browser binary (default /usr/bin/chromium).
//   - SV_CDP_DEBUG=1: print every DevTools protocol message to stderr.
//   - SV_BENCH=1: run TestBrowserBench (make bench-browser), which reports the
//     browser figures of the budgets in README.md, "What it costs"; SV_BENCH_N sets its request count
//     (default 1000).
//
// # The server
//
// The test server routes /t/ to testdata/pages (the harness's own pages,
// under the strict CSP), /__e2e/ to harness controls, paths a test registers
// with Server.Handle to the test, and everything else to the application,
// which newAppHandler builds: the demo app of internal/demo (what
// cmd/devserver serves: pages, session endpoints, the embedded js/ modules
// and the wasm) on a memory store. A test that needs an app of its own (a
// fresh audit log, short timeouts) starts one with newDemo, which serves it
// for the rest of the test; such tests must not run in parallel. Demo.LaneKeys
// reads and unseals the lane keys the server holds, so that the security tests
// know which bytes must never reach the browser's heaps or the network. The
// server records every request it gets (Server.Requests) and can send one
// again from outside the browser (Server.Replay).
//
// # The suites
//
//   - flow_test.go: the demo's flows through its UI (login, signed calls,
//     logout; rotation and expiry events; both pages under their CSP).
//   - security_test.go: heap snapshots and traffic free of key material,
//     hostile page script, replay from outside, the worker after logout
//     (its global, its heap, its wasm memory).
//   - bench_test.go: the browser benchmarks (SV_BENCH=1).
package e2e
