// Sessionvault's worker boot script. Load it with `new Worker(url, {type: "module"})` from the
// same origin (never from a blob: URL); js/client.js does this for you. It compiles vault.wasm
// (served beside it as application/wasm), binds the policy from the first "init" message and
// routes the page's messages. The page never receives key material: see SECURITY.md.

import { Instance } from "./abi.js";
import { Router } from "./router.js";

const wasmURL = new URL("vault.wasm", import.meta.url);
// Keep our own references: nothing else runs in this global, but a habit that costs nothing.
const post = self.postMessage.bind(self);
const netFetch = self.fetch.bind(self);

let router = null;
const ready = (async () => {
  const res = await netFetch(wasmURL, { credentials: "same-origin" });
  if (!res.ok) throw new Error("vault.wasm: HTTP " + res.status);
  const module = await WebAssembly.compileStreaming(res);
  const instance = await Instance.create(module, { log: (m) => console.error("[vault module]", m) });
  router = new Router({ instance, fetch: netFetch, post, origin: self.location.origin });
})();

ready.then(
  () => post({ event: "ready", detail: {} }),
  (e) => post({ event: "fatal", detail: { reason: "load_failed", message: String(e && e.message).slice(0, 200) } }),
);

self.addEventListener("message", (e) => {
  ready.then(
    () => router.onMessage(e.data),
    () => {
      const id = e.data && Number.isSafeInteger(e.data.id) ? e.data.id : null;
      post({ id, ok: false, error: { code: "fatal", message: "the vault module failed to load" } });
    },
  );
});
self.addEventListener("messageerror", () => {});
