"""The Node client of examples/node, written from proto/README.md alone: it decodes every golden vector as its
sidecar says (and fails on a vector and sidecar that disagree), and scores a generated batch against a live jpeg
service over msgpack and over JSON, as the Python binding does.

Needs node and npm (Node >= 18): without them the tests skip, which `make test` (REWARDFLOW_FAIL_ON_SKIP=1), as
CI, counts as a failure. `npm ci` installs the example's one dependency into examples/node/node_modules once per
package-lock.json (a stamp file records which)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from rewardflow_proto import MSGPACK, ScoreRequest, decode_response, encode_request

STARTUP_S = 180.0  # a service's start-up (imports) can take minutes on a loaded 2-core machine

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node"
GOLDEN = ROOT / "proto" / "golden"
STAMP = EXAMPLE / "node_modules" / ".rewardflow-lock-sha256"


def lock_digest() -> str:
    return hashlib.sha256((EXAMPLE / "package-lock.json").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, after `npm ci` in examples/node unless node_modules matches package-lock.json."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm (Node >= 18) are needed to test examples/node")
    lock_path = Path(tempfile.gettempdir()) / f"rewardflow-npm-{hashlib.sha256(bytes(EXAMPLE)).hexdigest()[:12]}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one `npm ci` at a time, should two test runs meet
        if not STAMP.exists() or STAMP.read_text() != lock_digest():
            run = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, capture_output=True, text=True, timeout=600
            )
            assert run.returncode == 0, f"npm ci in {EXAMPLE} failed:\n{run.stdout}\n{run.stderr}"
            STAMP.write_text(lock_digest())
    return node


def run_node(node: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node, *args], cwd=EXAMPLE, capture_output=True, text=True, timeout=120)


def sidecars(directory: Path) -> list[str]:
    return sorted(p.name.removesuffix(".expected.json") for p in directory.glob("*.expected.json"))


def test_every_golden_vector_agrees_with_its_sidecar(node: str) -> None:
    run = run_node(node, "check_golden.js", str(GOLDEN))
    assert run.returncode == 0, run.stdout + run.stderr
    cases = sidecars(GOLDEN)
    assert len(cases) >= 5
    lines = run.stdout.splitlines()
    for case in cases:
        assert any(line.startswith(f"ok {case}") for line in lines), (case, run.stdout)
    assert f"{len(cases)} of {len(cases)} golden vectors agree" in run.stdout
    # §6's canonical encoding, reproduced from the spec: every vector without an integral float (which JS writes
    # as an int) comes out byte for byte.
    for case in ("request_raw_batch", "request_mixed_list", "request_json", "error_invalid_request"):
        assert f"ok {case} (byte-identical)" in lines, run.stdout


def tamper_value(directory: Path) -> str:
    path = directory / "request_mixed_list.expected.json"
    sidecar = json.loads(path.read_text())
    sidecar["decoded"]["prompts"][0] = "a photo of two dogs"
    path.write_text(json.dumps(sidecar))
    return "decoded $.prompts[0]"


def tamper_body(directory: Path) -> str:
    path = directory / "request_raw_batch.msgpack"
    body = path.read_bytes()
    at = body.index(b"golden")
    path.write_bytes(body[:at] + b"G" + body[at + 1 :])  # the id's first letter: same size, other content
    return "body_sha256"


def tamper_key_order(directory: Path) -> str:
    path = directory / "error_invalid_request.expected.json"
    sidecar = json.loads(path.read_text())
    error = sidecar["decoded"]["error"]
    sidecar["decoded"]["error"] = {"message": error["message"], "code": error["code"], "field": error["field"]}
    path.write_text(json.dumps(sidecar))
    return "decoded $.error: keys [code,message,field] where the sidecar has [message,code,field]"


def tamper_bin_as_text(directory: Path) -> str:
    path = directory / "request_raw_batch.expected.json"
    sidecar = json.loads(path.read_text())
    sidecar["decoded"]["images"]["data"] = sidecar["decoded"]["images"]["data"]["$bin"]
    path.write_text(json.dumps(sidecar))
    return "decoded $.images.data: bin where the sidecar has string"


@pytest.mark.parametrize("tamper", [tamper_value, tamper_body, tamper_key_order, tamper_bin_as_text])
def test_a_vector_and_sidecar_that_disagree_fail_the_check(
    node: str, tmp_path: Path, tamper: Callable[[Path], str]
) -> None:
    copy = tmp_path / "golden"
    shutil.copytree(GOLDEN, copy)
    problem = tamper(copy)
    run = run_node(node, "check_golden.js", str(copy))
    assert run.returncode == 1, run.stdout + run.stderr
    assert problem in run.stdout, run.stdout
    assert f"{len(sidecars(copy)) - 1} of {len(sidecars(copy))} golden vectors agree" in run.stdout


def test_an_empty_folder_fails_the_check(node: str, tmp_path: Path) -> None:
    run = run_node(node, "check_golden.js", str(tmp_path))
    assert run.returncode == 1 and "no *.expected.json sidecars" in run.stderr


def generated_pixels(n: int, h: int, w: int) -> np.ndarray:
    """What score.js generates: pixel (i, y, x, c) = (50 i + 13 y + 7 x + 85 c) mod 256."""
    i, y, x, c = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return ((50 * i + 13 * y + 7 * x + 85 * c) % 256).astype(np.uint8)


@pytest.fixture(scope="module")
def jpeg_url(module_service_process: Callable) -> str:
    return module_service_process("jpeg", timeout_s=STARTUP_S).url


def score_js(node: str, url: str, n: int, h: int, w: int) -> dict:
    run = run_node(node, "score.js", url, str(n), str(h), str(w))
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)


def test_node_scores_a_generated_batch_over_msgpack_and_json(node: str, jpeg_url: str) -> None:
    result = score_js(node, jpeg_url, 3, 20, 12)
    request = ScoreRequest(images=generated_pixels(3, 20, 12), prompts=[f"generated image {i}" for i in range(3)])
    reply = httpx.post(
        jpeg_url + "/v1/score", content=encode_request(request), headers={"content-type": MSGPACK}, timeout=30
    )
    expected = decode_response(reply.content)
    for name in ("msgpack", "json"):
        assert re.fullmatch(rf"node-{name}-[0-9a-f-]{{36}}", result[name]["id"]) and result[name]["service"] == "jpeg"
        assert result[name]["scores"] == expected.scores and result[name]["errors"] == [None] * 3
        error = result[f"{name}_error"]
        assert (error["code"], error["status"]) == ("invalid_request", 422)
        assert error["message"].startswith("images: has 3 images but there are 1 prompts")
    # Another batch a moment later: a fresh id per request, so the service does not refuse it as a reused id (§1).
    again = score_js(node, jpeg_url, 2, 8, 8)
    ids = {result["msgpack"]["id"], result["json"]["id"], again["msgpack"]["id"], again["json"]["id"]}
    assert len(ids) == 4 and again["msgpack"]["errors"] == [None] * 2
