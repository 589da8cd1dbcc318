"""The golden vectors in proto/golden/ are what this binding encodes, byte for byte, and decode back."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import msgpack
import numpy as np
import pytest
from rewardflow_proto import JSON, EncodedImage, ScoreRequest, decode_request, decode_response
from rewardflow_proto.codec import decode_error
from rewardflow_proto.golden import JPEG_2X2, PNG_2X2, GoldenCase, cases, check, encode, main

GOLDEN = Path(__file__).resolve().parents[2] / "proto" / "golden"
CASES = {case.name: case for case in cases()}


def _from_logical(value):
    """Sidecar JSON back to plain values ({"$bin": hex} -> bytes)."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {k: _from_logical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_logical(v) for v in value]
    return value


def assert_requests_equal(got: ScoreRequest, want: ScoreRequest) -> None:
    assert (got.version, got.id, got.prompts) == (want.version, want.id, want.prompts)
    assert (got.metadata, got.group_ids) == (want.metadata, want.group_ids)
    if isinstance(want.images, np.ndarray):
        assert isinstance(got.images, np.ndarray) and got.images.dtype == np.uint8
        np.testing.assert_array_equal(got.images, want.images)
        return
    assert isinstance(got.images, list) and len(got.images) == len(want.images)
    for g, w in zip(got.images, want.images, strict=True):
        if isinstance(w, EncodedImage):
            assert isinstance(g, EncodedImage) and g.format == w.format and bytes(g.data) == bytes(w.data)
        else:
            assert isinstance(g, np.ndarray) and g.dtype == np.uint8
            np.testing.assert_array_equal(g, w)


def test_every_case_has_a_checked_in_body_and_sidecar() -> None:
    on_disk = {p.name for p in GOLDEN.iterdir()}
    expected = {c.body_file for c in CASES.values()} | {c.sidecar_file for c in CASES.values()}
    assert expected <= on_disk
    assert {c.kind for c in CASES.values()} == {"request", "response", "error"}
    assert check(GOLDEN) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_binding_reproduces_golden_bytes(name: str) -> None:
    case = CASES[name]
    assert encode(case) == (GOLDEN / case.body_file).read_bytes()


@pytest.mark.parametrize("name", sorted(CASES))
def test_sidecar_describes_the_body(name: str) -> None:
    case = CASES[name]
    body = (GOLDEN / case.body_file).read_bytes()
    sidecar = json.loads((GOLDEN / case.sidecar_file).read_text(encoding="utf-8"))
    assert sidecar["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert sidecar["body_size"] == len(body)
    assert sidecar["content_type"] == case.content_type
    if case.content_type == JSON:
        return  # base64 fields: compared through the typed decode below
    generic = msgpack.unpackb(body, raw=False)
    assert generic == _from_logical(sidecar["decoded"])
    # Key order on the wire is the sidecar's order (the canonical order of the spec).
    assert list(generic) == list(sidecar["decoded"])


def _decode(case: GoldenCase, body: bytes):
    if case.kind == "request":
        return decode_request(body, case.content_type)
    if case.kind == "response":
        return decode_response(body, case.content_type)
    return decode_error(body, case.content_type)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_body_decodes_to_the_case_message(name: str) -> None:
    case = CASES[name]
    decoded = _decode(case, (GOLDEN / case.body_file).read_bytes())
    if case.kind == "request":
        assert_requests_equal(decoded, case.message)  # type: ignore[arg-type]
    else:
        assert decoded == case.message


def test_json_golden_carries_base64_and_decodes_to_the_sidecar_bytes() -> None:
    case = CASES["request_json"]
    body = (GOLDEN / case.body_file).read_bytes()
    raw = json.loads(body)
    sidecar = _from_logical(json.loads((GOLDEN / case.sidecar_file).read_text(encoding="utf-8"))["decoded"])
    assert isinstance(raw["images"][0]["data"], str)
    request = decode_request(body, JSON)
    assert request.images[0].tobytes() == sidecar["images"][0]["data"]
    assert bytes(request.images[1].data) == sidecar["images"][1]["data"] == PNG_2X2


def test_literal_png_and_jpeg_are_real_2x2_rgb_images() -> None:
    pil = pytest.importorskip("PIL.Image")
    png = np.asarray(pil.open(io.BytesIO(PNG_2X2)).convert("RGB"))
    np.testing.assert_array_equal(png, [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]])
    jpeg = pil.open(io.BytesIO(JPEG_2X2))
    assert (jpeg.format, jpeg.size, jpeg.mode) == ("JPEG", (2, 2), "RGB")


def test_generator_writes_files_identical_to_the_checked_in_ones(tmp_path: Path) -> None:
    assert main(["--write", str(tmp_path)]) == 0
    for path in GOLDEN.iterdir():
        if path.suffix in (".msgpack", ".json"):
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    (tmp_path / "request_raw_batch.msgpack").write_bytes(b"\x80")
    assert main(["--check", str(tmp_path)]) == 1
