// Compiled by js/test/types.test.js with tsc --noEmit (strict): what an SPA written in
// TypeScript does with the package, resolved through its package.json exports as a bundler or
// Node would. Each @ts-expect-error line is a misuse the types must refuse; tsc fails if one
// is accepted ("Unused '@ts-expect-error' directive"), so the check cannot pass vacuously.
import { Vault, VaultError } from "@sessionvault/client";
import type { CreateOptions, Policy, Status, VaultEventMap } from "@sessionvault/client";

const policy: Policy = { origins: ["https://api.example.com"], prefixes: ["/api/"], methods: ["GET", "POST"] };
const opts: CreateOptions = { workerURL: new URL("/sv/worker.js", "https://app.example.com"), policy, followLogins: false, timeoutMs: 5000 };

export async function main(signal: AbortSignal): Promise<string> {
  const vault: Vault = await Vault.create(opts);
  await Vault.create(); // every option has a default

  vault.addEventListener("revoked", (e) => console.log(e.detail.reason.toUpperCase()));
  vault.addEventListener("rotated", (e) => { const n: number = e.detail.epoch; console.log(n); });
  vault.addEventListener("active", (e) => console.log(e.detail.joined === true, e.detail.expires ?? 0));
  vault.addEventListener("expiring", (e) => console.log(new Date(e.detail.deadline)));
  vault.addEventListener("rekey_failed", (e) => console.log(e.detail.code));
  vault.addEventListener("channel", (e) => { const up: boolean = e.detail.connected; console.log(up); });
  vault.addEventListener("fatal", (e) => console.log(e.detail.reason, e.detail.message));
  const onExpired = (e: VaultEventMap["expired"]) => console.log(e.detail.reason);
  vault.addEventListener("expired", onExpired);
  vault.removeEventListener("expired", onExpired);
  vault.addEventListener("some-other-event", (e: Event) => console.log(e.type));

  const st: Status = await vault.login({ user: "alice", password: "correct horse" });
  if (st.state === "active") console.log(st.epoch, st.expires);
  if (!vault.joined && vault.joinError !== null) console.log(vault.joinError.length);

  const r1: Response = await vault.fetch("/api/profile");
  const r2 = await vault.fetch(new URL("https://api.example.com/api/x"), { method: "POST", body: JSON.stringify({ a: 1 }), headers: { "Content-Type": "application/json" }, signal });
  const r3 = await vault.fetch(new Request("/api/upload", { method: "PUT", body: new Blob(["x"]) }));
  const form = new FormData();
  form.append("f", "v");
  await vault.fetch("/api/form", { method: "POST", body: form });

  // Bound methods: a library that takes a fetch function.
  const takesFetch = (f: typeof fetch) => f;
  takesFetch(vault.fetch);

  try {
    await vault.fetch("/api/x");
  } catch (e) {
    if (e instanceof VaultError) {
      const c: string = e.code;
      if (e.code === "no_session" || e.code === "policy_denied" || e.code === "bad_credentials") console.log(c, e.message);
    }
  }
  const err = new VaultError("network", "no answer");
  console.log(err instanceof Error, err.code);

  await vault.logout();
  console.log((await vault.status()).reason);
  vault.terminate();

  // Misuse the types must refuse.
  // @ts-expect-error the constructor is private: use Vault.create
  new Vault(new Worker("/sv/worker.js"));
  // @ts-expect-error prefixes is a list
  await Vault.create({ policy: { prefixes: "/api/" } });
  // @ts-expect-error unknown option
  await Vault.create({ workerUrl: "/sv/worker.js" });
  // @ts-expect-error revoked carries a reason, not an epoch
  vault.addEventListener("revoked", (e) => console.log(e.detail.epoch));
  // @ts-expect-error fetch takes a URL, a string or a Request
  await vault.fetch(42);
  // @ts-expect-error no such state
  if (st.state === "logged-in") console.log("never");
  // @ts-expect-error joined is read-only
  vault.joined = true;

  return (await r1.text()) + (await r2.json()) + r3.status;
}
