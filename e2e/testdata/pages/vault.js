// The vault page of the e2e tests: the real page client (js/client.js) against the demo app's
// session endpoints, exposed as window.vault so that tests can drive the page API directly, as
// the application's own code (or script injected into it) would. Every vault event is recorded in
// window.vaultEvents and document.body.dataset.lastEvent. The policy's path prefixes come from
// the query (?prefixes=/api/,/sv/); the default is the demo's.
import { Vault, VaultError } from "/sv/client.js";

const data = document.body.dataset;
const q = new URLSearchParams(location.search);
const prefixes = (q.get("prefixes") || "/api/,/sv/,/admin/api/").split(",").filter(Boolean);
window.vaultEvents = [];
try {
  const vault = await Vault.create({ workerURL: "/sv/worker.js", policy: { prefixes } });
  for (const name of ["active", "rotated", "rekeyed", "expiring", "expired", "revoked", "fatal"]) {
    vault.addEventListener(name, (e) => {
      window.vaultEvents.push({ name, detail: e.detail });
      data.lastEvent = name;
    });
  }
  // The event socket's ups and downs, apart (they are not session events).
  window.vaultChannel = [];
  vault.addEventListener("channel", (e) => window.vaultChannel.push(e.detail.connected));
  window.vault = vault;
  window.VaultError = VaultError;
  data.state = (await vault.status()).state;
  data.readyAt = String(performance.now()); // ms since navigation start: the reload-to-active time when it joined
} catch (e) {
  data.error = (e && e.code ? e.code + ": " : "") + (e && e.message);
  data.state = "error";
  console.error("vault page: vault failed:", e);
}
