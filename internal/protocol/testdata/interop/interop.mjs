// Test-only bridge to an independent RFC 9421 implementation, dhensby/node-http-message-signatures
// (npm http-message-signatures), for internal/protocol/interop_test.go. It reads a JSON array of
// jobs on stdin and writes a JSON array of results on stdout:
//
//   {"op":"sign", "key":"<hex>", "label":"sv", "method":"POST", "url":"https://...", "headers":{...},
//    "components":["@method", ...], "params":["created", ...], "values":{"created":<s>, "keyid":"...", ...}}
//     -> {"signatureInput":"...", "signature":"..."}
//   {"op":"verify", "key":"<hex>", "method":"POST", "url":"https://...", "headers":{... with signature fields}}
//     -> {"ok":true} or {"ok":false, "error":"..."}
//
// Install once with: npm ci --prefix internal/protocol/testdata/interop
import { httpbis, createSigner, createVerifier } from 'http-message-signatures';

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const jobs = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const out = [];
for (const job of jobs) {
  const key = Buffer.from(job.key, 'hex');
  const msg = { method: job.method, url: job.url, headers: job.headers };
  try {
    if (job.op === 'sign') {
      const values = { ...job.values };
      if (values.created !== undefined) values.created = new Date(values.created * 1000);
      const signed = await httpbis.signMessage({
        key: createSigner(key, 'hmac-sha256'),
        name: job.label,
        fields: job.components,
        params: job.params,
        paramValues: values,
      }, msg);
      out.push({ signatureInput: signed.headers['Signature-Input'], signature: signed.headers['Signature'] });
    } else if (job.op === 'verify') {
      const ok = await httpbis.verifyMessage({
        keyLookup: async () => ({ algs: ['hmac-sha256'], verify: createVerifier(key, 'hmac-sha256') }),
      }, msg);
      out.push({ ok: ok === true });
    } else {
      out.push({ ok: false, error: 'unknown op' });
    }
  } catch (e) {
    out.push({ ok: false, error: String(e && e.message || e) });
  }
}
process.stdout.write(JSON.stringify(out));
