// Re-key and logout races in the router, against a fake server written with node:crypto (its
// re-key chains the new key from the current one, PROTOCOL.md 3.4). Each case was a bug found in
// review, reproduced here first.
import test from "node:test";
import assert from "node:assert/strict";
import { Router } from "../router.js";
import { fakeSessionServer, newInstance, signKey, verifyProfile } from "./helpers.js";

const ORIGIN = "https://app.example";

/** A router over a fake session server, nothing sent yet. */
async function loggedOut() {
  const srv = fakeSessionServer();
  const posted = [];
  const router = new Router({ instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/sv/" });
  return { srv, posted, router };
}

test("a late refusal of the wiped lane does not wipe the next login's handshake", async () => {
  const { srv, posted, router } = await loggedOut();
  await router.onMessage({ id: 1, op: "init" });
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  for (const s of srv.sessions.values()) { s.live = false; s.gone = "revoked"; } // admin revoke
  let releaseSlow; const slowGate = new Promise((r) => (releaseSlow = r));
  const inner = srv.fetch;
  srv.fetch = async (url, init) => { if (new URL(url).pathname === "/api/slow") await slowGate; return inner(url, init); };
  const slow = router.onMessage({ id: 3, op: "fetch", url: "/api/slow" }); // signed now, answered late
  await router.onMessage({ id: 4, op: "fetch", url: "/api/x" }); // 401 revoked: wiped, page told
  let releaseLogin; srv.gates.login = new Promise((r) => (releaseLogin = r));
  const li = router.onMessage({ id: 5, op: "login", credentials: { password: "pw" } }); // the page logs in again
  await new Promise((r) => setTimeout(r, 5));
  releaseSlow(); await slow; // the old lane's late 401 arrives while the login is in flight
  releaseLogin(); await li;
  const reply = posted.find((m) => m.id === 5);
  assert.ok(reply.ok, "the re-login failed because a late refusal of the old lane wiped its handshake");
});

test("logout while a re-key hint arrives: no live session keeps its cookie", async () => {
  const { srv, posted, router } = await loggedOut();
  await router.onMessage({ id: 1, op: "init" });
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  // The logout request is slow; meanwhile a response carries Sv-Action: rekey.
  let release; srv.gates.logout = new Promise((r) => (release = r));
  srv.action = "rekey";
  const lo = router.onMessage({ id: 3, op: "logout" });
  await new Promise((r) => setTimeout(r, 5));
  await router.onMessage({ id: 4, op: "fetch", url: "/api/x" }); // its response starts a re-key
  await new Promise((r) => setTimeout(r, 20)); // the re-key commits on the server
  release();
  await lo;
  await new Promise((r) => setTimeout(r, 20));
  const live = [...srv.sessions.values()].filter((s) => s.live).map((s) => s.id);
  assert.deepEqual(live, [], "a session outlived the logout, and the browser holds its join cookie");
});

test("a response of the replaced lane does not start a second re-key", async () => {
  const { srv, posted, router } = await loggedOut();
  await router.onMessage({ id: 1, op: "init" });
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  srv.action = "rekey"; // RequireRekey pending on the session
  let release; const gate = new Promise((r) => (release = r));
  const inner = srv.fetch;
  let rekeys = 0;
  srv.fetch = async (url, init) => {
    const p = new URL(url).pathname;
    if (p === "/sv/rekey") { rekeys++; srv.action = null; }
    const res = await inner(url, init); // verified (hint set) now...
    if (p === "/api/slow") await gate; // ...answered after the re-key finished
    return res;
  };
  const slow = router.onMessage({ id: 3, op: "fetch", url: "/api/slow" });
  await router.onMessage({ id: 4, op: "fetch", url: "/api/x" }); // hint: re-key
  await router.rekeying; 
  srv.action = null;
  release(); await slow;
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(rekeys, 1);
});

test("the rekey grant that came with the hint goes back with the re-key, never to the page", async () => {
  const { srv, posted, router } = await loggedOut();
  await router.onMessage({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  srv.action = "rekey";
  srv.grant = "c2VhbGVk-Z3JhbnQ_";
  await router.onMessage({ id: 3, op: "fetch", url: "/api/elevate", method: "POST" });
  const reply = posted.find((m) => m.id === 3);
  assert.ok(reply.ok);
  assert.ok(!reply.result.headers.some(([k]) => k.startsWith("sv-")), "no Sv-* header reaches the page: " + JSON.stringify(reply.result.headers));
  srv.action = null;
  while (router.rekeying) await router.rekeying.catch(() => {});
  assert.deepEqual(srv.rekeyGrants, ["c2VhbGVk-Z3JhbnQ_"]);
  assert.equal(router.rekeyGrant, null, "the grant is dropped with the session it was for");
  // A malformed grant is not kept (nor sent).
  srv.action = "rekey";
  srv.grant = 'x","role":"admin';
  await router.onMessage({ id: 4, op: "fetch", url: "/api/again" });
  srv.action = null;
  while (router.rekeying) await router.rekeying.catch(() => {});
  assert.deepEqual(srv.rekeyGrants, ["c2VhbGVk-Z3JhbnQ_", null]);
});
