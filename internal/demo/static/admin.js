// The demo admin view: sessions per user with revoke buttons, and the audit log as it happens.
// It talks to the server through its own vault worker, like any other signed client.
import { Vault } from "/sv/client.js";

const $ = (id) => document.getElementById(id);
const fail = (e) => ($("error").textContent = e ? (e.code ? e.code + ": " : "") + e.message : "");
const vault = await Vault.create({ workerURL: "/sv/worker.js", policy: { prefixes: ["/admin/api/", "/sv/"] } });
let after = 0;
let timer = null;

async function api(path, init) {
  const res = await vault.fetch(path, init);
  if (!res.ok) throw Object.assign(new Error("HTTP " + res.status), { code: res.headers.get("content-type")?.includes("json") ? (await res.json()).error : "http" });
  return res.json();
}

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text;
  tr.append(td);
  return td;
}

async function loadSessions() {
  const data = await api("/admin/api/sessions");
  const tbody = $("sessions");
  tbody.replaceChildren();
  for (const s of data.sessions) {
    const tr = document.createElement("tr");
    tr.dataset.handle = s.handle;
    cell(tr, s.user);
    cell(tr, s.handle);
    cell(tr, new Date(s.created).toLocaleTimeString());
    cell(tr, new Date(s.lastSeen).toLocaleTimeString());
    cell(tr, new Date(s.expires).toLocaleString());
    cell(tr, String(s.lanes));
    const td = cell(tr, "");
    const b = document.createElement("button");
    b.textContent = "Revoke";
    b.className = "revoke";
    b.addEventListener("click", () => act("/admin/api/revoke", { user: s.user, handle: s.handle }));
    const all = document.createElement("button");
    all.textContent = "Revoke all of " + s.user;
    all.addEventListener("click", () => act("/admin/api/revoke-user", { user: s.user }));
    td.append(b, all);
    tbody.append(tr);
  }
}

async function act(path, body) {
  fail(null);
  try {
    await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    await loadSessions();
  } catch (e) {
    fail(e);
  }
}

async function poll() {
  try {
    const data = await api("/admin/api/audit?after=" + after);
    for (const ev of data.events) {
      after = Math.max(after, ev.seq);
      const li = document.createElement("li");
      li.textContent = ev.line;
      $("audit").prepend(li);
    }
    if (data.events.length) await loadSessions();
  } catch (e) {
    fail(e);
  }
}

async function refresh() {
  const s = await vault.status();
  const active = s.state === "active" || s.state === "rotating";
  $("login-box").hidden = active;
  $("sessions-box").hidden = !active;
  clearInterval(timer);
  if (active) {
    await loadSessions().catch(fail);
    await poll();
    timer = setInterval(poll, 1000);
  }
}

for (const name of ["expired", "revoked"]) vault.addEventListener(name, () => refresh());
$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  fail(null);
  try {
    await vault.login({ user: "admin", password: $("password").value });
    $("password").value = "";
    await refresh();
  } catch (err) {
    fail(err);
  }
});
$("reload").addEventListener("click", () => loadSessions().catch(fail));
$("logout").addEventListener("click", async () => {
  await vault.logout().catch(fail);
  await refresh();
});
await refresh();
// Usable only once the submit listener is attached (see app.js).
$("login").disabled = false;
