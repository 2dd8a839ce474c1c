// Package js embeds Sessionvault's browser modules (worker.js, client.js and their imports) so
// that Go servers can serve them next to the wasm module without copying files around.
package js

import "embed"

// Files holds the browser modules at its root.
//
//go:embed worker.js client.js router.js events.js abi.js wasi.js index.d.ts
var Files embed.FS

// Modules lists the JavaScript modules a page and its vault worker load, served under the
// session prefix (for example /sv/worker.js).
var Modules = []string{"worker.js", "client.js", "router.js", "events.js", "abi.js", "wasi.js"}
