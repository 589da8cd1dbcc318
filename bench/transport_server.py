"""The two common alternatives to our transport, served by the same uvicorn stack, for service_bench (b).

`/pickle`: a pickled dict of per-image JPEG bytes (the reference's way); `/json`: base64 JPEGs in JSON.
Both decode every image back to a uint8 array, as a scoring service must. Bench-only: pickle is never
used by rewardflow itself.
"""

import base64
import io
import json
import pickle

import numpy as np
from fastapi import FastAPI, Request, Response
from PIL import Image

app = FastAPI()


def to_array(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "alive"}


@app.post("/pickle")
async def score_pickle(request: Request) -> Response:
    payload = pickle.loads(await request.body())
    arrays = [to_array(b) for b in payload["images"]]
    return Response(pickle.dumps({"n": len(arrays), "scores": [0.0] * len(arrays)}))


@app.post("/json")
async def score_json(request: Request) -> Response:
    payload = json.loads(await request.body())
    arrays = [to_array(base64.b64decode(s)) for s in payload["images"]]
    return Response(json.dumps({"n": len(arrays), "scores": [0.0] * len(arrays)}), media_type="application/json")


@app.post("/sink")
async def sink(request: Request) -> Response:
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
    return Response(str(n))
