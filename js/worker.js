// Sessionvault's worker boot script. Load it with `new Worker(url, {type: "module"})` from the
// same origin (never from a blob: URL); js/client.js does this for you. It compiles vault.wasm
// (served beside it as application/wasm), binds the policy from the first "init" message and
// routes the page's messages. The page never receives key material: see SECURITY.md.
//
// Served by the Go server's boot-script endpoint ({prefix}worker.js), it may carry a join
// ticket (PROTOCOL.md section 3.2): only in the response to a fresh dedicated worker of a page
// whose browser holds the cookie of a live session. The ticket exists in this worker's global
// only; the worker trades it, once, for a lane of that session at {prefix}join.

import { Instance } from "./abi.js";
import { Router } from "./router.js";

// The server fills in this line; served as a plain file, it stays empty (no join). Instead of a
// ticket it may say why there is none, when a retry may help: "!rate_limited" or
// "!store_unavailable" (PROTOCOL.md 3.2); the page gets that as its joinError.
let ticket = "";
const joinRefusal = ticket.startsWith("!") ? ticket.slice(1) : ""; // the router checks its form
if (joinRefusal) ticket = "";
const wasmURL = new URL("vault.wasm", import.meta.url);
// The join endpoint is beside the script that carried the ticket: the server only puts a ticket
// into the script it serves at {prefix}worker.js, so the ticket can only go back there (the
// page's init message cannot send it elsewhere).
const joinURL = new URL("join", import.meta.url).href;
// Keep our own references: nothing else runs in this global, but a habit that costs nothing.
const post = self.postMessage.bind(self);
const netFetch = self.fetch.bind(self);

// The script's directory as a server's router sees it (percent-decoded): the vault's own
// endpoints, which the page may not have this worker fetch.
function scriptDir() {
  const dir = new URL(".", import.meta.url).pathname;
  try {
    return decodeURIComponent(dir);
  } catch {
    return dir;
  }
}

let router = null;
const ready = (async () => {
  const res = await netFetch(wasmURL, { credentials: "same-origin" });
  if (!res.ok) throw new Error("vault.wasm: HTTP " + res.status);
  const module = await WebAssembly.compileStreaming(res);
  const instance = await Instance.create(module, { log: (m) => console.error("[vault module]", m) });
  router = new Router({
    instance,
    fetch: netFetch,
    post,
    origin: self.location.origin,
    joinURL,
    reserved: scriptDir(),
    hasTicket: () => ticket !== "",
    joinRefusal,
    takeTicket: () => {
      const t = ticket;
      ticket = "";
      return t;
    },
  });
})();

ready.then(
  () => post({ event: "ready", detail: {} }),
  (e) => post({ event: "fatal", detail: { reason: "load_failed", message: String(e && e.message).slice(0, 200) } }),
);

self.addEventListener("message", (e) => {
  // Once the module is up, straight to the router (a promise step less per request); before
  // that, in arrival order once it is.
  if (router) {
    router.onMessage(e.data);
    return;
  }
  ready.then(
    () => router.onMessage(e.data),
    () => {
      const id = e.data && Number.isSafeInteger(e.data.id) ? e.data.id : null;
      post({ id, ok: false, error: { code: "fatal", message: "the vault module failed to load" } });
    },
  );
});
self.addEventListener("messageerror", () => {});
