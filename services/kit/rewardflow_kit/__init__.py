"""rewardflow_kit: turn a scorer (a class with `load()` and `score()`) into a reward service.

## Writing a new service

A service is a folder `services/<name>/` with a package `rewardflow_<name>` holding `scorer.py`:

```python
import numpy as np
from rewardflow_kit import Batch, ItemFailure, ItemScore

class BrightnessScorer:
    name = "brightness"                 # == folder name == reward name in configs
    version = "1.0.0"
    model_id = ""                       # HF id or local path (REWARDFLOW_MODEL overrides it)
    device = "cpu"                      # REWARDFLOW_DEVICE overrides it before load()
    score_keys = ("brightness",)        # the first is the primary score
    score_range = {"brightness": (0.0, 1.0)}
    max_batch_size = 64

    def load(self) -> None:             # runs once, in the model thread, before a warm-up batch
        pass

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        out = []
        for image in batch.images:      # uint8 (H, W, 3) arrays; prompts, metadata, group_ids alongside
            if image.size == 0:
                out.append(ItemFailure("bad_image", "empty image"))   # returned, not raised
            else:
                out.append(ItemScore({"brightness": float(image.mean()) / 255}))
        return out
```

Declare the class as an entry point in the package's `pyproject.toml`; once the package is
installed, the service is found by its name:

```toml
[project.entry-points."rewardflow.scorers"]
brightness = "rewardflow_brightness.scorer:BrightnessScorer"
```

Serve it with `python -m rewardflow_kit brightness` (or `rewardflow serve brightness`); a class that
no package declares is served as `python -m rewardflow_kit rewardflow_brightness.scorer:BrightnessScorer`.
With no name, `python -m rewardflow_kit` serves $REWARDFLOW_SERVICE (what the images set).
`services/README.md` has the whole checklist for adding a reward (Dockerfile, compose, tests).

The kit does the rest: `POST /v1/score` (msgpack or JSON), `/healthz`, `/readyz` (503 until `load()`
and one warm-up batch have run; define `warmup_batch() -> Batch` to choose that batch), `/v1/info`,
`/metrics`, the Open Inference Protocol (`/v2/health/live`, `/v2/health/ready`, `GET /v2`,
`/v2/models/<name>[/versions/<v>]`, `.../ready`, `.../config` and `POST .../infer`: proto/README.md §10),
micro-batching of concurrent requests, bounded
inputs (see "Limits" below), an optional bearer API key, the contract's error body for every failure (an
unknown path is 404 `not_found`, a wrong method 405 `method_not_allowed`), and per-item errors:

- an image that does not decode gets `bad_image` in its slot; the other items are still scored;
- an ItemFailure returned by `score()` becomes that item's error;
- if `score()` raises for a whole batch, the kit logs it and scores the items one by one, so only
  the item that fails gets `score_failed`;
- a NaN or infinite score becomes `non_finite`, never a silent 0.

A request that only the reward can judge wrong (OCR: a prompt with no quoted target text and no
`target_text` metadata) is refused whole before any work is queued: define
`validate(prompts, metadata)` and raise `InvalidRequest("metadata[3].target_text", "...")`; the
client gets 422 with that field and message. `validate` runs in a worker thread (never on the event
loop, never in the model thread), so it must be thread-safe and cheap: no model work, nothing worse
than linear in a prompt (prompts are at most 10,000 characters, the contract's `max_prompt_chars`).

A scorer whose model resizes every image anyway may declare `working_size = 224` (an int, the shorter
side it resizes to; default None): the kit then hands it PNG/JPEG images downscaled while decoding,
their shorter side still at least `working_size` (JPEG: the decoder's 1/2, 1/4, 1/8 scaling; PNG: a
box reduce right after decoding). Raw images arrive as sent.

A scorer that loads from the Hugging Face hub declares what, in `required_models()` -> a list of
`rewardflow_kit.hub.RequiredModel` (repo id, the files that must be there, optional ones, the setting
that names it), derived from its settings: `rewardflow models list|pull` and the trainer read it
(`rewardflow_kit.registry.service_models`). A scorer without it loads nothing from the hub.

From a shell (JSON bodies are accepted too; binary fields are base64, here one red pixel):

```bash
curl -s localhost:8000/v1/score -H 'content-type: application/json' \
  -d '{"version": 1, "prompts": ["a red square"], "images": [{"format": "raw", "shape": [1, 1, 3], "data": "/wAA"}]}'
```

Every response carries `timing`: `queue_ms` (waiting for a batch, including up to
`MAX_QUEUE_DELAY_MS`), `compute_ms` (image decoding and `score()` for the merged batch) and
`total_ms` (from the request's arrival at the handler to encoding the response).

`score()` always runs in one dedicated model thread, never on the event loop. If `load()` or the
warm-up raises, the process stays up and `/readyz` answers 503 with the error (probes show why;
an orchestrator's readiness gate keeps traffic away).

## Limits (what a hostile or broken client cannot do)

- Memory for a body grows with the bytes that arrive, never from the declared Content-Length; the
  whole body must arrive within `REWARDFLOW_BODY_TIMEOUT_S` (else 408 `request_timeout`, connection
  closed); at most `REWARDFLOW_MAX_INFLIGHT_BODIES` bodies are received at once (else 429, Retry-After).
- Decoded pixels are budgeted from what the PNG/JPEG headers declare, before anything is decoded:
  per image, per request (413 `too_large` naming the limit) and per model call (a merged batch over
  `REWARDFLOW_MAX_BATCH_PIXELS` is decoded and scored in several calls, each request whole). At the
  defaults one model call holds at most 2^26 pixels, 192 MiB as RGB.
- Decoding, `validate` and the header checks run in a worker thread, not on the event loop.
- A retried request (the same non-empty `id`, the same body) is answered from the first's answer, or waits
  for it while the first is still being scored, never scored twice (`rewardflow_repeated_requests_total`).
- A client that disconnects mid-upload is counted as `code="499"` in `rewardflow_requests_total` and
  logged in one INFO line; 500 is only ever a kit bug.

`GET /v1/info` publishes every one of these limits.

## Settings (environment variables)

| variable | default | meaning |
|---|---|---|
| `REWARDFLOW_HOST` | `127.0.0.1` | Address to listen on; `0.0.0.0` inside a container. |
| `REWARDFLOW_PORT` | `8000` | TCP port to listen on. |
| `REWARDFLOW_MAX_BATCH_SIZE` | scorer | Most images per model call and per request (more: 413); at most the scorer's. |
| `REWARDFLOW_MAX_QUEUE_DELAY_MS` | `5.0` | Triton-style: how long the first queued request waits for a fuller batch. |
| `REWARDFLOW_MAX_QUEUE_SIZE` | `1024` | Most images waiting in the queue; beyond it: 429 with Retry-After. |
| `REWARDFLOW_MAX_BODY_BYTES` | `67108864` | Largest request body in bytes; a larger one gets 413 before it is read. |
| `REWARDFLOW_BODY_TIMEOUT_S` | `30` | Seconds a whole body may take to arrive; slower: 408, connection closed. |
| `REWARDFLOW_MAX_INFLIGHT_BODIES` | `64` | Most bodies received at once; one more: 429 with Retry-After, unread. |
| `REWARDFLOW_MAX_IMAGE_PIXELS` | `16777216` | Most pixels (H·W) of one image, raw or per its header; more: 413. |
| `REWARDFLOW_MAX_REQUEST_PIXELS` | `67108864` | Most pixels of a request's images in all (192 MiB as RGB); more: 413. |
| `REWARDFLOW_MAX_BATCH_PIXELS` | `67108864` | Most pixels decoded per model call (at least the request budget). |
| `REWARDFLOW_ANSWER_CACHE_SIZE` | `4096` | Answers kept by request id: a retry is answered, not rescored. 0: off. |
| `REWARDFLOW_ANSWER_CACHE_TTL_S` | `600` | Seconds an answer stays in that cache. |
| `REWARDFLOW_API_KEY` | unset | Requires `Authorization: Bearer <key>` on `/v1/*` and `/v2/models/*` (and docs). |
| `REWARDFLOW_DEVICE` | the scorer's | Device for the model (`cpu`, `cuda`, `cuda:1`). |
| `REWARDFLOW_MODEL` | the scorer's | Model id or local path. |
| `REWARDFLOW_LOG_LEVEL` | `info` | Log level of the service and uvicorn. |
| `REWARDFLOW_ACCESS_LOG` | `false` | Log one line per HTTP request. |
| `REWARDFLOW_RETRY_AFTER_S` | `1` | Retry-After seconds sent with 429 (queue full) and 503 (not ready). |
| `REWARDFLOW_DOCS` | `false` | Serve `/docs`, `/redoc`, `/openapi.json` (behind the API key when one is set). |
| `REWARDFLOW_STAY_UP_ON_LOAD_ERROR` | `false` | Stay up, `/readyz` 503 with the reason, when the model cannot load. |

A model that cannot load ends the process by default: exit code 3 and, as the last line on stderr,
`<service>: <cause>` naming the setting (for a model missing from the Hugging Face cache, also the
`rewardflow models pull <service>` to run); `rewardflow stack up` and the trainer report that line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rewardflow_kit.app import create_app
    from rewardflow_kit.scorer import Batch, InvalidRequest, ItemFailure, ItemScore, Scorer
    from rewardflow_kit.server import load_scorer, run, serve_spec
    from rewardflow_kit.settings import ServiceSettings

# Imported on first use: `rewardflow_kit.stack` and `rewardflow_kit.registry` (what the CLI and the trainer
# import) must not pull in FastAPI and uvicorn.
_LAZY: dict[str, str] = {
    "Batch": "rewardflow_kit.scorer",
    "InvalidRequest": "rewardflow_kit.scorer",
    "ItemFailure": "rewardflow_kit.scorer",
    "ItemScore": "rewardflow_kit.scorer",
    "Scorer": "rewardflow_kit.scorer",
    "ServiceSettings": "rewardflow_kit.settings",
    "create_app": "rewardflow_kit.app",
    "load_scorer": "rewardflow_kit.server",
    "run": "rewardflow_kit.server",
    "serve_spec": "rewardflow_kit.server",
}

__all__ = [
    "Batch",
    "InvalidRequest",
    "ItemFailure",
    "ItemScore",
    "Scorer",
    "ServiceSettings",
    "create_app",
    "load_scorer",
    "run",
    "serve_spec",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rewardflow_kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
