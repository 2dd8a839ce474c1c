// The page API's types (index.d.ts) as a TypeScript SPA sees them: test/types/usage.ts is
// compiled by tsc (strict) against the package resolved through its package.json exports.
// usage.ts also holds misuses the types must refuse (@ts-expect-error), so a declaration that
// loosens or breaks fails here. tsc comes from test/types/node_modules (scripts/deps.sh runs
// npm ci there); without it the test skips loudly, and fails under CI (SV_STRICT=1).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), "types");
const tsc = path.join(dir, "node_modules", "typescript", "bin", "tsc");

test("index.d.ts compiles a strict TypeScript SPA's use of the package and refuses misuse", (t) => {
  if (!existsSync(tsc)) {
    const msg = "SKIPPED: TypeScript is not installed in js/test/types (run `npm ci --prefix js/test/types`, or `make test`)";
    if (process.env.SV_STRICT === "1") assert.fail(msg + "; SV_STRICT=1 makes this a failure");
    console.error("\n*** " + msg + " ***\n");
    t.skip(msg);
    return;
  }
  let out = "";
  try {
    execFileSync(process.execPath, [tsc, "-p", path.join(dir, "tsconfig.json")], { cwd: dir, encoding: "utf8", stdio: "pipe" });
  } catch (e) {
    out = String(e.stdout || "") + String(e.stderr || "") || String(e);
  }
  assert.equal(out, "", "tsc found errors:\n" + out);
});
