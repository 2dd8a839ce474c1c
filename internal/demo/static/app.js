// The demo SPA. Everything it knows about the session comes through the vault's page API: it
// never sees a key, a ticket or a session ID.
import { Vault } from "/sv/client.js";

const $ = (id) => document.getElementById(id);
const show = (obj) => ($("result").textContent = typeof obj === "string" ? obj : JSON.stringify(obj, null, 2));
const log = (name, detail) => {
  const li = document.createElement("li");
  li.textContent = new Date().toLocaleTimeString() + "  " + name + (detail && Object.keys(detail).length ? "  " + JSON.stringify(detail) : "");
  $("events").prepend(li);
};
const fail = (e) => ($("error").textContent = e ? (e.code ? e.code + ": " : "") + e.message : "");

const vault = await Vault.create({ workerURL: "/sv/worker.js", policy: { prefixes: ["/api/", "/sv/", "/admin/api/"] } });
window.__sessionvaultDemo = { ready: true };

async function refresh() {
  const s = await vault.status();
  const active = s.state === "active" || s.state === "rotating";
  $("login-box").hidden = active;
  $("session-box").hidden = !active;
  $("state").textContent = s.state + (s.reason ? " (" + s.reason + ")" : "");
  $("epoch").textContent = String(s.epoch);
  $("expires").textContent = s.expires ? new Date(s.expires).toLocaleString() : "-";
  document.body.dataset.state = s.state;
  return s;
}

for (const name of ["active", "rotated", "rekeyed", "expiring", "expired", "revoked", "fatal"]) {
  vault.addEventListener(name, (e) => {
    log(name, e.detail);
    document.body.dataset.lastEvent = name;
    refresh().catch(fail);
  });
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  fail(null);
  try {
    await vault.login({ user: $("user").value, password: $("password").value });
    $("password").value = "";
    await refresh();
  } catch (err) {
    fail(err);
  }
});

async function call(path, init) {
  fail(null);
  try {
    const res = await vault.fetch(path, init);
    const text = await res.text();
    let body = text;
    try {
      body = JSON.parse(text);
    } catch {}
    show({ status: res.status, body });
    document.body.dataset.lastStatus = String(res.status);
  } catch (err) {
    fail(err);
    document.body.dataset.lastStatus = "error:" + err.code;
  }
  await refresh();
}

$("call-api").addEventListener("click", () => call("/api/profile"));
$("post-note").addEventListener("click", () =>
  call("/api/notes", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text: "hello at " + new Date().toISOString() }) }),
);
// A long response read as it arrives: vault.fetch streams bodies that pause. It stops when the
// button is pressed again (abort) or when the session ends (the worker fails the stream at once
// and the server's handler, watching mgr.SessionContext, stops too).
let live = null;
$("live-toggle").addEventListener("click", async () => {
  if (live) return live.abort();
  live = new AbortController();
  $("live-toggle").textContent = "Stop the stream";
  const lines = [];
  const put = (s) => {
    lines.push(s);
    $("live").textContent = lines.slice(-8).join("\n");
    document.body.dataset.liveLines = String(lines.length);
  };
  try {
    const res = await vault.fetch("/api/live", { signal: live.signal });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (let buf = ""; ; ) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      for (let i; (i = buf.indexOf("\n")) >= 0; buf = buf.slice(i + 1)) put(buf.slice(0, i));
    }
    put("(the server ended the stream)");
  } catch (err) {
    put("(stream ended: " + (err.code || err.name) + (err.message ? ", " + err.message : "") + ")");
  }
  document.body.dataset.liveEnded = "true";
  live = null;
  $("live-toggle").textContent = "Stream GET /api/live";
});
$("logout").addEventListener("click", async () => {
  try {
    await vault.logout();
  } catch (err) {
    fail(err);
  }
  await refresh();
});

await refresh();
// The form works only from here on: a submit before this module had its listener would have been
// a native one (the form posts to /, which refuses it; credentials never go into a URL).
$("login").disabled = false;
