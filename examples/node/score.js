// Score a generated batch against a live reward service, over msgpack and over JSON, and show that a bad request
// comes back as the contract's error (proto/README.md §2-§4). Prints one JSON line with what each format returned.
//
//   node score.js URL [N H W]          (REWARDFLOW_API_KEY, when set, is sent as a bearer token)
import { batchRequest, ContractError, JSON_TYPE, MSGPACK, newRequestId, score } from "./rewardflow.js";

/** N images of H x W: pixel (i, y, x, c) = (50 i + 13 y + 7 x + 85 c) mod 256, row-major RGB. */
function generatedPixels(n, h, w) {
  const pixels = new Uint8Array(n * h * w * 3);
  let k = 0;
  for (let i = 0; i < n; i++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) pixels[k++] = (50 * i + 13 * y + 7 * x + 85 * c) % 256;
  return pixels;
}

async function refused(url, contentType, pixels, shape) {
  // One prompt for N images breaks §2 ("images, metadata and group_ids MUST each have N entries"): a 422.
  try {
    await score(url, batchRequest(pixels, shape, ["only one prompt"]), { contentType });
  } catch (err) {
    if (err instanceof ContractError) return { code: err.code, status: err.status, message: err.reason };
    throw err;
  }
  throw new Error(`a request with ${shape[0]} images and one prompt was scored (${contentType})`);
}

async function main([url, n = "2", h = "16", w = "24"]) {
  if (!url) throw new Error("usage: node score.js URL [N H W]");
  const shape = [Number(n), Number(h), Number(w), 3];
  const pixels = generatedPixels(...shape.slice(0, 3));
  const prompts = Array.from({ length: shape[0] }, (_, i) => `generated image ${i}`);
  const result = {};
  for (const [name, contentType] of [["msgpack", MSGPACK], ["json", JSON_TYPE]]) {
    // A fresh id per request: a service answers a recent id sent with another body with a 422 (§1).
    const request = batchRequest(pixels, shape, prompts, { id: `node-${name}-${newRequestId()}` });
    const response = await score(url, request, { contentType });
    result[name] = { id: response.id, service: response.service, scores: response.scores, errors: response.errors };
    result[`${name}_error`] = await refused(url, contentType, pixels, shape);
  }
  console.log(JSON.stringify(result));
}

main(process.argv.slice(2)).catch((err) => {
  console.error(`score.js: ${err.message}`);
  process.exitCode = 1;
});
