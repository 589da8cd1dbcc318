// Check this client against the golden vectors (proto/README.md §6): every `<name>.expected.json` sidecar in DIR
// names a body file; its size and SHA-256 must match, decoding it must give the sidecar's `decoded` value exactly
// (same keys in the same order, bin where it says {"$bin": hex}), and re-encoding that value must decode to it
// again. Whether the re-encoding is byte-identical is reported, not required: JS writes an integral float as an
// int (§9). Exits 1 on any disagreement, or when DIR holds no sidecar.
//
//   node check_golden.js [DIR]          (default: ../../proto/golden)
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { decodeBody, encodeRequest, JSON_TYPE, MSGPACK } from "./rewardflow.js";
import { encode } from "@msgpack/msgpack";

const hex = (bytes) => Buffer.from(bytes).toString("hex");

// The sidecar's JSON with {"$bin": "<hex>"} objects turned into bytes.
function withBytes(value) {
  if (Array.isArray(value)) return value.map(withBytes);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bin") return new Uint8Array(Buffer.from(value.$bin, "hex"));
    return Object.fromEntries(keys.map((k) => [k, withBytes(value[k])]));
  }
  return value;
}

const kind = (v) => (v === null ? "nil" : v instanceof Uint8Array ? "bin" : Array.isArray(v) ? "array" : typeof v);

/** The differences between `got` and `want`, each as "path: what"; strict about types and key order. */
function differences(got, want, path = "$") {
  if (kind(got) !== kind(want)) return [`${path}: ${kind(got)} where the sidecar has ${kind(want)}`];
  if (got instanceof Uint8Array) return hex(got) === hex(want) ? [] : [`${path}: bytes ${hex(got)} != ${hex(want)}`];
  if (Array.isArray(got)) {
    if (got.length !== want.length) return [`${path}: ${got.length} entries where the sidecar has ${want.length}`];
    return got.flatMap((g, i) => differences(g, want[i], `${path}[${i}]`));
  }
  if (got !== null && typeof got === "object") {
    const [gk, wk] = [Object.keys(got), Object.keys(want)];
    if (gk.join("\0") !== wk.join("\0")) return [`${path}: keys [${gk}] where the sidecar has [${wk}] (in this order)`];
    return gk.flatMap((k) => differences(got[k], want[k], `${path}.${k}`));
  }
  return Object.is(got, want) || (got === 0 && want === 0) ? [] : [`${path}: ${JSON.stringify(got)} != ${JSON.stringify(want)}`];
}

function reencode(value, contentType, isRequest) {
  if (contentType === JSON_TYPE && !isRequest) return new TextEncoder().encode(JSON.stringify(value));
  return isRequest ? encodeRequest(value, contentType) : encode(value);
}

/** Problems with one case (an empty list when it agrees) and a note on re-encoding. */
function checkCase(dir, sidecarName) {
  const sidecar = JSON.parse(readFileSync(join(dir, sidecarName), "utf8"));
  const body = new Uint8Array(readFileSync(join(dir, sidecar.body_file)));
  const problems = [];
  if (body.length !== sidecar.body_size) problems.push(`body_size: the file has ${body.length} bytes, the sidecar says ${sidecar.body_size}`);
  const sha = createHash("sha256").update(body).digest("hex");
  if (sha !== sidecar.body_sha256) problems.push(`body_sha256: the file's is ${sha}, the sidecar says ${sidecar.body_sha256}`);
  if (![MSGPACK, JSON_TYPE].includes(sidecar.content_type)) return { problems: [...problems, `content_type ${sidecar.content_type}`] };
  const isRequest = sidecar.kind === "request";
  const want = withBytes(sidecar.decoded);
  let got;
  try {
    got = decodeBody(body, sidecar.content_type, { isRequest });
  } catch (err) {
    return { problems: [...problems, `decoding failed: ${err.message}`] };
  }
  problems.push(...differences(got, want).map((d) => `decoded ${d}`));
  const again = reencode(want, sidecar.content_type, isRequest);
  problems.push(...differences(decodeBody(again, sidecar.content_type, { isRequest }), want).map((d) => `re-encoded ${d}`));
  const note = hex(again) === hex(body) ? "byte-identical" : `re-encoded to ${again.length} bytes, not byte-identical`;
  return { problems, note };
}

function main(dir) {
  const sidecars = readdirSync(dir).filter((f) => f.endsWith(".expected.json")).sort();
  if (sidecars.length === 0) {
    console.error(`${dir}: no *.expected.json sidecars`);
    return 1;
  }
  let failed = 0;
  for (const name of sidecars) {
    let result;
    try {
      result = checkCase(dir, name);
    } catch (err) {
      result = { problems: [`cannot check: ${err.message}`] };
    }
    const status = result.problems.length ? "FAIL" : "ok";
    console.log(`${status} ${name.replace(".expected.json", "")}${result.note ? ` (${result.note})` : ""}`);
    for (const problem of result.problems) console.log(`    ${problem}`);
    failed += result.problems.length ? 1 : 0;
  }
  console.log(`${sidecars.length - failed} of ${sidecars.length} golden vectors agree with their sidecars`);
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv[2] ?? new URL("../../proto/golden", import.meta.url).pathname);
