// Package js embeds Sessionvault's browser modules (worker.js, client.js and their imports) so
// that the Go server serves them without copying files around: the worker's boot script bundled
// ([WorkerBundle]) and the page's client.js.
package js

import "embed"

// Files holds the browser modules at its root.
//
//go:embed worker.js client.js router.js events.js abi.js wasi.js index.d.ts
var Files embed.FS
