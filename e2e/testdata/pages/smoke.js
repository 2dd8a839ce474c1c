// The smoke page of the e2e harness: boot the real vault (js/client.js, the
// real worker and vault.wasm) under the strict CSP and publish its state in
// document.body.dataset for the test to poll. No inline script: the CSP
// forbids it.
import { Vault } from "/sv/client.js";

const data = document.body.dataset;
try {
  const vault = await Vault.create({ workerURL: "/sv/worker.js" });
  window.smokeVault = vault;
  const s = await vault.status();
  data.epoch = String(s.epoch);
  data.state = s.state;
} catch (e) {
  data.error = (e && e.code ? e.code + ": " : "") + (e && e.message);
  data.state = "error";
  console.error("smoke: vault failed:", e);
}
