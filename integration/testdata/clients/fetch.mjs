// Sends one request described by the JSON in argv[2] with Node's built-in
// fetch (a FormData body for multipart, spec.json for json), the way an app's code would, and
// prints {"status": N, "retryAfter": "...", "body": "..."} or {"error": "..."}. fetch writes the
// whole body before it reads the answer and sends no Expect header.
import { readFileSync } from 'node:fs';

const spec = JSON.parse(process.argv[2]);
const data = spec.file ? readFileSync(spec.file) : null;
let body;
if (spec.mode === 'json') {
  body = JSON.stringify(spec.json);
  spec.headers = { ...spec.headers, 'Content-Type': 'application/json' };
} else if (spec.mode === 'multipart') {
  body = new FormData();
  for (const [k, v] of Object.entries(spec.fields ?? {})) body.append(k, v);
  body.append('file', new Blob([data], { type: spec.fileType }), 'photo.jpg');
  for (const [k, v] of Object.entries(spec.after ?? {})) body.append(k, v);
} else {
  body = data;
}
try {
  const resp = await fetch(spec.url, { method: spec.method, headers: spec.headers, body });
  console.log(JSON.stringify({ status: resp.status, retryAfter: resp.headers.get('retry-after') ?? '', body: await resp.text() }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e.cause?.code ?? e.cause ?? e.message) }));
}
