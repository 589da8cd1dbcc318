// The rewardflow wire contract, version 1, in JavaScript: written from proto/README.md alone.
//
// A request is a map {version, id, images, prompts, metadata?, group_ids?}; images are one raw batch
// {format: "raw", dtype: "uint8", shape: [N, H, W, 3], data} or a list of raw/PNG/JPEG images. msgpack carries
// `data` as bin (a Uint8Array here); JSON carries it as standard base64 text with padding (§1).
import { randomUUID } from "node:crypto";
import { decode, encode } from "@msgpack/msgpack";

export const VERSION = 1;
export const MSGPACK = "application/msgpack";
export const JSON_TYPE = "application/json";

/** A whole-request failure (§4): the service's error body, or a malformed answer reported as `bad_body`. */
export class ContractError extends Error {
  constructor(code, message, status, field) {
    super(`${code}: ${message}`);
    this.code = code;
    this.reason = message;
    this.status = status;
    this.field = field;
  }
}

/** A fresh request id. A service answers a recent id with another body with a 422 (§1): one id per distinct
 * request, reused only to retry the same body. */
export function newRequestId() {
  return randomUUID();
}

/** The request value of §2 for one raw batch: `pixels` holds N*H*W*3 bytes, row-major RGB; `id` defaults to a fresh
 * one (pass the first attempt's id, with the same batch, only to retry it). */
export function batchRequest(pixels, shape, prompts, { id = newRequestId(), metadata, groupIds } = {}) {
  const [n, h, w, c] = shape;
  if (c !== 3 || pixels.length !== n * h * w * 3) {
    throw new RangeError(`pixels: ${pixels.length} bytes do not fill shape [${shape}] (last axis must be 3)`);
  }
  const value = { version: VERSION, id, images: { format: "raw", dtype: "uint8", shape, data: pixels }, prompts };
  if (metadata !== undefined) value.metadata = metadata;
  if (groupIds !== undefined) value.group_ids = groupIds;
  return value;
}

function bytesToBase64(bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

function base64ToBytes(text, field) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new ContractError("bad_body", `${field}: expected standard base64 text with padding`, 400, field);
  }
  return new Uint8Array(Buffer.from(text, "base64"));
}

// The binary fields of a request in JSON: the `data` of the batch map, or of each image of the list (§1, §2).
function mapImageData(value, convert) {
  if (value === null || typeof value !== "object" || !("images" in value)) return value;
  const images = value.images;
  const one = (image, field) =>
    image !== null && typeof image === "object" && "data" in image
      ? { ...image, data: convert(image.data, `${field}.data`) }
      : image;
  const mapped = Array.isArray(images) ? images.map((im, i) => one(im, `images[${i}]`)) : one(images, "images");
  return { ...value, images: mapped };
}

// §6: JSON with compact separators, keys in order, non-ASCII escaped as \uXXXX.
function asciiJson(value) {
  return JSON.stringify(value).replace(/[\u0080-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A request value as body bytes in msgpack or JSON. */
export function encodeRequest(value, contentType = MSGPACK) {
  if (contentType === MSGPACK) return encode(value);
  if (contentType === JSON_TYPE) return new TextEncoder().encode(asciiJson(mapImageData(value, bytesToBase64)));
  throw new RangeError(`content type ${contentType}: use ${MSGPACK} or ${JSON_TYPE}`);
}

/** Body bytes as plain values; a request's JSON image data comes back as Uint8Array, as from msgpack. */
export function decodeBody(bytes, contentType, { isRequest = false } = {}) {
  let value;
  try {
    value = contentType === MSGPACK ? decode(bytes) : JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw new ContractError("bad_body", `not valid ${contentType}: ${err.message}`, 400);
  }
  return contentType === JSON_TYPE && isRequest ? mapImageData(value, base64ToBytes) : value;
}

// §3: the fields a client relies on, checked; unknown fields are ignored (§7).
function checkResponse(body) {
  const bad = (message) => new ContractError("bad_body", `response: ${message}`, 200);
  if (body === null || typeof body !== "object") throw bad("expected a map");
  if (body.version !== VERSION) {
    throw new ContractError("unsupported_version", `response version ${body.version}; this client speaks ${VERSION}`, 200, "version");
  }
  if (!Array.isArray(body.errors)) throw bad("errors: expected an array");
  const n = body.errors.length;
  for (const [key, list] of Object.entries(body.scores ?? {})) {
    if (!Array.isArray(list) || list.length !== n) throw bad(`scores.${key}: expected ${n} entries`);
    list.forEach((v, i) => {
      if (v !== null && (typeof v !== "number" || !Number.isFinite(v))) throw bad(`scores.${key}[${i}]: ${v}`);
      if ((v === null) !== (body.errors[i] !== null)) throw bad(`scores.${key}[${i}]: nil exactly where errors[${i}] is set`);
    });
  }
  return body;
}

/** POST /v1/score; the score response (§3), or throws ContractError with the service's code and message (§4). */
export async function score(url, request, { contentType = MSGPACK, apiKey = process.env.REWARDFLOW_API_KEY } = {}) {
  const headers = { "Content-Type": contentType, Accept: contentType };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const reply = await fetch(`${url.replace(/\/$/, "")}/v1/score`, { method: "POST", headers, body: encodeRequest(request, contentType) });
  const replyType = (reply.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  const body = decodeBody(new Uint8Array(await reply.arrayBuffer()), replyType === MSGPACK ? MSGPACK : JSON_TYPE);
  if (reply.ok) return checkResponse(body);
  const error = body?.error ?? {};
  const code = typeof error.code === "string" ? error.code : `http_${reply.status}`;  // §4: unknown code: by status
  throw new ContractError(code, String(error.message ?? reply.statusText), reply.status, error.field);
}
