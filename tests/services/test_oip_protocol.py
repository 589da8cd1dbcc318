"""The Open Inference Protocol over raw HTTP: metadata, OIP error bodies on every /v2 path, infer in JSON and
binary form with per-item errors, the API key, the limits and the micro-batcher shared with /v1/score."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from rewardflow_proto import ScoreRequest, decode_response, encode_request
from service_calls import MSGPACK, random_images

STARTUP_S = 180.0  # a service's start-up (imports) can take minutes on a loaded 2-core machine

API_KEY = "oip-key-3"
AUTH = {"authorization": f"Bearer {API_KEY}"}
MAX_BATCH = 8
MAX_BODY = 200_000


@pytest.fixture(scope="module")
def url(module_service_process: Callable) -> str:
    """The probe scorer (brightness, double; prompts steer item failures) behind an API key and small limits."""
    env = {
        "REWARDFLOW_API_KEY": API_KEY,
        "REWARDFLOW_MAX_BATCH_SIZE": str(MAX_BATCH),
        "REWARDFLOW_MAX_BODY_BYTES": str(MAX_BODY),
    }
    return module_service_process("scorers:ProbeScorer", env=env, timeout_s=STARTUP_S).url


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def json_infer(images: np.ndarray, prompts: list[str], metadata: list[str] | None = None) -> dict[str, Any]:
    """An infer request with every input as JSON data (images nested, as numpy's tolist writes them)."""
    inputs = [
        tensor("images", "UINT8", list(images.shape), images.tolist()),
        tensor("prompts", "BYTES", [len(prompts)], prompts),
    ]
    if metadata is not None:
        inputs.append(tensor("metadata", "BYTES", [len(metadata)], metadata))
    return {"id": "req-1", "inputs": inputs}


def infer(url: str, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + "/v2/models/probe/infer", content=content, headers={**AUTH, **(headers or {})}, timeout=30)


def oip_error(reply: httpx.Response, status: int) -> str:
    """The message of an OIP error body `{"error": "..."}`, after checking the status."""
    assert reply.status_code == status, (reply.status_code, reply.content[:300])
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert isinstance(body["error"], str) and body["error"] and "detail" not in body, body
    return body["error"]


def outputs_of(reply: httpx.Response) -> dict[str, list]:
    assert reply.status_code == 200, reply.content[:500]
    return {o["name"]: o["data"] for o in reply.json()["outputs"]}


def test_server_metadata(url: str) -> None:
    meta = httpx.get(url + "/v2", headers=AUTH).json()
    assert meta["name"] == "rewardflow" and meta["version"]
    assert {"binary_tensor_data", "model_configuration"} <= set(meta["extensions"])


@pytest.mark.parametrize("prefix", ["/v2/models/probe", "/v2/models/probe/versions/0.0.1"])
def test_model_metadata_config_and_readiness(url: str, prefix: str) -> None:
    meta = httpx.get(url + prefix, headers=AUTH).json()
    assert meta["name"] == "probe" and meta["versions"] == ["0.0.1"] and meta["parameters"]["name"] == "probe"
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
        ("images", "UINT8"), ("prompts", "BYTES"), ("metadata", "BYTES")
    ]  # fmt: skip
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [
        ("brightness", "FP64"), ("double", "FP64"), ("errors", "BYTES"), ("details", "BYTES")
    ]  # fmt: skip
    config = httpx.get(url + prefix + "/config", headers=AUTH).json()
    assert config["name"] == "probe" and config["max_batch_size"] == MAX_BATCH
    assert [t["name"] for t in config["input"]] == ["images", "prompts", "metadata"]
    assert httpx.get(url + prefix + "/ready", headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/v2/models/jpeg", 404, "'jpeg'"),
        ("GET", "/v2/models/jpeg/ready", 404, "'jpeg'"),
        ("GET", "/v2/models/jpeg/config", 404, "'jpeg'"),
        ("POST", "/v2/models/jpeg/infer", 404, "'jpeg'"),
        ("GET", "/v2/models/probe/versions/9/config", 404, "version '9'"),
        ("GET", "/v2/models", 404, "GET /v2/models"),
        ("GET", "/v2/repository/index", 404, "/v2/repository/index"),
        ("POST", "/v2", 405, "answers GET"),
        ("GET", "/v2/models/probe/infer", 405, "answers POST"),
        ("DELETE", "/v2/health/live", 405, "answers GET"),
    ],
)
def test_every_v2_failure_is_an_oip_error_body(url: str, method: str, path: str, status: int, words: str) -> None:
    reply = httpx.request(method, url + path, headers=AUTH)
    assert words in oip_error(reply, status)
    if status == 405:
        assert reply.headers["allow"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2/models/probe"), ("GET", "/v2/models/probe/ready"),
     ("GET", "/v2/models/probe/config"), ("POST", "/v2/models/probe/infer")],
)  # fmt: skip
def test_the_api_key_guards_the_model_paths(url: str, method: str, path: str) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        reply = httpx.request(method, url + path, headers=headers)
        assert "API key" in oip_error(reply, 401)
        assert reply.headers["www-authenticate"].startswith("Bearer")


def test_server_metadata_and_health_need_no_key(url: str) -> None:
    for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(url + path).status_code == 200


def brightness(images: np.ndarray) -> list[float]:
    return [float(image.mean()) / 255 for image in images]


def test_json_infer_scores_as_v1_score_does(url: str) -> None:
    images = random_images(3, 8, 8, seed=2)
    reply = infer(url, json_infer(images, ["a", "b", "c"]))
    body = reply.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("probe", "0.0.1", "req-1")
    assert body["parameters"]["total_ms"] > 0
    outputs = outputs_of(reply)
    expected = decode_response(
        httpx.post(
            url + "/v1/score",
            content=encode_request(ScoreRequest(images=images, prompts=["a", "b", "c"])),
            headers={**AUTH, "content-type": MSGPACK},
        ).content
    )
    assert outputs["brightness"] == expected.scores["brightness"] == pytest.approx(brightness(images))
    assert outputs["double"] == expected.scores["double"]
    assert outputs["errors"] == ["", "", ""]
    assert [json.loads(d)["read_only"] for d in outputs["details"]] == [True] * 3


def test_flat_json_data_is_accepted(url: str) -> None:
    images = random_images(2, 4, 4, seed=3)
    body = json_infer(images, ["a", "b"])
    body["inputs"][0]["data"] = images.reshape(-1).tolist()
    assert outputs_of(infer(url, body))["brightness"] == pytest.approx(brightness(images))


def test_per_item_errors_are_null_scores_and_an_errors_entry(url: str) -> None:
    images = random_images(3, 8, 8, seed=4)
    outputs = outputs_of(infer(url, json_infer(images, ["ok", "nan", "refuse"])))
    assert outputs["brightness"][0] == pytest.approx(brightness(images)[0])
    assert outputs["brightness"][1:] == [None, None] and outputs["double"][1:] == [None, None]
    assert outputs["errors"][0] == "" and outputs["details"][1:] == ["", ""]
    errors = [json.loads(e) for e in outputs["errors"][1:]]
    assert [e["code"] for e in errors] == ["non_finite", "bad_metadata"]
    assert "refuses" in errors[1]["message"]


def binary_infer(images: np.ndarray, prompts: list[bytes], outputs: list[str]) -> tuple[bytes, dict[str, str]]:
    """A body of the binary tensor data extension: the JSON header, then the images, then length-prefixed prompts."""
    prompt_bytes = b"".join(struct.pack("<I", len(p)) + p for p in prompts)
    header = {
        "inputs": [
            {"name": "images", "datatype": "UINT8", "shape": list(images.shape),
             "parameters": {"binary_data_size": images.nbytes}},
            {"name": "prompts", "datatype": "BYTES", "shape": [len(prompts)],
             "parameters": {"binary_data_size": len(prompt_bytes)}},
        ],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
    }  # fmt: skip
    text = json.dumps(header).encode()
    return text + images.tobytes() + prompt_bytes, {"inference-header-content-length": str(len(text))}


def test_binary_infer_answers_binary_outputs_with_nan_for_failed_items(url: str) -> None:
    images = random_images(2, 8, 8, seed=6)
    body, headers = binary_infer(images, ["é".encode(), b"refuse"], ["brightness", "errors"])
    reply = infer(url, body, headers)
    assert reply.status_code == 200, reply.content[:300]
    length = int(reply.headers["inference-header-content-length"])
    head = json.loads(reply.content[:length])
    assert [(o["name"], o["shape"]) for o in head["outputs"]] == [("brightness", [2]), ("errors", [2])]
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    data = reply.content[length:]
    assert len(data) == sum(sizes)
    scores = np.frombuffer(data[: sizes[0]], dtype="<f8")
    assert scores[0] == pytest.approx(brightness(images)[0]) and np.isnan(scores[1])
    errors = data[sizes[0] :]
    assert struct.unpack_from("<I", errors, 0) == (0,)
    assert json.loads(errors[8:])["code"] == "bad_metadata"


def test_metadata_reaches_the_scorer_validation(url: str) -> None:
    images = random_images(2, 4, 4)
    allowed = infer(url, json_infer(images, ["invalid", "b"], ['{"allow": true}', ""]))
    assert outputs_of(allowed)["errors"] == ["", ""]
    refused = infer(url, json_infer(images, ["invalid", "b"], ["null", ""]))
    assert "metadata[0].allow" in oip_error(refused, 422)


def bad(**changes: Any) -> dict[str, Any]:
    body = json_infer(random_images(2, 4, 4), ["a", "b"])
    for name, change in changes.items():
        index = {"images": 0, "prompts": 1}[name]
        body["inputs"][index] = {**body["inputs"][index], **change} if change is not None else None
    body["inputs"] = [t for t in body["inputs"] if t is not None]
    return body


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (bad(prompts=None), 422, "required input 'prompts'"),
        (bad(images={"datatype": "FP32"}), 422, "images.datatype: expected UINT8, got 'FP32'"),
        (bad(images={"shape": [2, 4, 4]}), 422, "images.shape"),
        (bad(images={"shape": [2, 4, 2, 6]}), 422, "3 channels"),
        (bad(images={"data": [[1.5]] * 96}), 422, "integers 0..255"),
        (bad(images={"data": [300] * 96}), 422, "integers 0..255"),
        (bad(images={"data": [1] * 95}), 422, "holds 95 values"),
        (bad(prompts={"shape": [3], "data": ["a", "b", "c"]}), 422, "3 prompts"),
        (bad(prompts={"data": ["a", 7]}), 422, "prompts.data: expected a list of 2 strings"),
        ({"inputs": [{"name": "pictures"}]}, 422, "expected one of images, prompts, metadata"),
        ({**bad(), "outputs": [{"name": "score"}]}, 422, "outputs[0].name"),
        (b'{"inputs": [', 400, "not valid JSON"),
        (b'{"inputs": [], "id": NaN}', 400, "not valid JSON"),
    ],
)
def test_bad_inputs_get_an_oip_error_naming_the_input(url: str, body: Any, status: int, words: str) -> None:
    assert words in oip_error(infer(url, body), status)


def test_bad_binary_data_is_refused(url: str) -> None:
    images = random_images(1, 4, 4)
    body, headers = binary_infer(images, [b"a"], ["brightness"])
    assert "Inference-Header-Content-Length" in oip_error(
        infer(url, body, {"inference-header-content-length": "x"}), 400
    )
    assert "binary_data_size add up to" in oip_error(infer(url, body + b"extra", headers), 400)
    no_utf8, headers = binary_infer(images, [b"\xff"], ["brightness"])
    assert "prompts[0]: is not UTF-8" in oip_error(infer(url, no_utf8, headers), 422)


def test_limits_apply_as_on_v1_score(url: str) -> None:
    images = random_images(MAX_BATCH + 1, 2, 2)
    too_many = oip_error(infer(url, json_infer(images, ["p"] * (MAX_BATCH + 1))), 413)
    assert f"max_batch_size is {MAX_BATCH}" in too_many
    big, headers = binary_infer(random_images(1, 300, 300), [b"a"], ["brightness"])
    assert f"max_body_bytes of {MAX_BODY}" in oip_error(infer(url, big, headers), 413)


async def post_together(url: str, infer_bodies: list[bytes], score_bodies: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
        infers = [client.post(url + "/v2/models/probe/infer", content=b) for b in infer_bodies]
        scores = [client.post(url + "/v1/score", content=b, headers={"content-type": MSGPACK}) for b in score_bodies]
        return await asyncio.gather(*infers, *scores)


@pytest.mark.slow
def test_infer_and_score_requests_share_the_micro_batcher(service_process: Callable) -> None:
    # The first request waits up to 10 minutes for others to fill a batch of 4: all four meet in one model call.
    env = {"REWARDFLOW_API_KEY": API_KEY, "REWARDFLOW_MAX_QUEUE_DELAY_MS": "600000", "REWARDFLOW_MAX_BATCH_SIZE": "4"}
    service = service_process("scorers:ProbeScorer", env=env, timeout_s=STARTUP_S)
    infer_bodies = [json.dumps(json_infer(random_images(1, 4, 4, seed=i), ["p"])).encode() for i in range(2)]
    score_bodies = [encode_request(ScoreRequest(images=random_images(1, 4, 4, seed=i), prompts=["p"])) for i in (2, 3)]
    replies = asyncio.run(post_together(service.url, infer_bodies, score_bodies))
    assert [r.status_code for r in replies] == [200] * 4
    details = [json.loads(outputs_of(r)["details"][0]) for r in replies[:2]]
    details += [decode_response(r.content).details[0] for r in replies[2:]]  # type: ignore[index]
    assert {d["batch_size"] for d in details} == {4} and len({d["batch_id"] for d in details}) == 1
