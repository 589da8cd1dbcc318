"""Golden vectors: the case definitions, and the generator/checker of proto/golden/.

Run `python -m rewardflow_proto.golden --write proto/golden` after a deliberate change to the
encoding, `--check proto/golden` to compare. Every image byte here is a literal, so the vectors never
depend on an image library's version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from rewardflow_proto.codec import JSON, MSGPACK, dump, error_to_value, request_to_value, response_to_value
from rewardflow_proto.messages import EncodedImage, ErrorBody, ItemError, ScoreRequest, ScoreResponse

# A 2x2 RGB PNG: red, green / blue, white (written once by Pillow, kept as bytes).
PNG_2X2 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73000000164944415478da63f8cfc0c0"
    "f09f819181e1ffffff0c001ef604fd0b317c090000000049454e44ae426082"
)
# A 2x2 RGB baseline JPEG (quality 90, optimized Huffman tables).
JPEG_2X2 = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb0043000302020302020303030304030304050805050404050a07"
    "0706080c0a0c0c0b0a0b0b0d0e12100d0e110e0b0b1016101113141515150c0f171816141812141514ffdb0043010304"
    "0405040509050509140d0b0d141414141414141414141414141414141414141414141414141414141414141414141414"
    "1414141414141414141414141414ffc00011080002000203012200021101031101ffc400150001010000000000000000"
    "0000000000000008ffc4001d100001040301010000000000000000000001000203040506071131ffc400140101000000"
    "00000000000000000000000007ffc4001c11000006030000000000000000000000000001030433b1347172ffda000c03"
    "010002110311003f00b3383f3fd5f23c3b9ddbb7ade22d5a9f5cc74b2cf35089ef91eead19739ce2df49249249fa8888"
    "f9d4ea6cec163cc957a3b1ffd9"
)


@dataclass(frozen=True)
class GoldenCase:
    """One vector: a typed message, the content type it is encoded with, and what it shows."""

    name: str
    kind: str  # "request" | "response" | "error"
    content_type: str
    description: str
    message: ScoreRequest | ScoreResponse | ErrorBody

    @property
    def body_file(self) -> str:
        return f"{self.name}.{'json' if self.content_type == JSON else 'msgpack'}"

    @property
    def sidecar_file(self) -> str:
        return f"{self.name}.expected.json"


def _pixels(rows: list) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def cases() -> list[GoldenCase]:
    """Every golden case, built fresh (the messages hold numpy arrays)."""
    batch = _pixels(
        [
            [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]],
            [[[0, 0, 0], [1, 2, 3]], [[128, 64, 32], [250, 251, 252]]],
        ]
    )
    return [
        GoldenCase(
            name="request_raw_batch",
            kind="request",
            content_type=MSGPACK,
            description="Two 2x2 RGB images as one contiguous raw batch (the fast path); no metadata.",
            message=ScoreRequest(
                images=batch,
                prompts=["a red, green, blue and white square", "a dark square"],
                id="golden-raw-batch",
            ),
        ),
        GoldenCase(
            name="request_mixed_list",
            kind="request",
            content_type=MSGPACK,
            description=(
                "A list of three images: raw 1x3, PNG 2x2, JPEG 2x2; per-image metadata (one nil) with "
                "ints of several widths, a float, nested lists and maps; group ids mixing strings and an int."
            ),
            message=ScoreRequest(
                images=[
                    _pixels([[[10, 20, 30], [40, 50, 60], [70, 80, 90]]]),
                    EncodedImage(format="png", data=PNG_2X2),
                    EncodedImage(format="jpeg", data=JPEG_2X2),
                ],
                prompts=["a photo of two cats", 'a café sign that reads "OPEN"', ""],
                metadata=[
                    {
                        "tag": "counting",
                        "include": [{"class": "cat", "count": 2}],
                        "exclude": [{"class": "cat", "count": 3}],
                        "weight": 0.5,
                        "ints": [0, -1, -33, 127, 128, 300, 70000, -40000, 5000000000],
                        "flag": True,
                    },
                    None,
                    {"tag": "", "empty": {}, "nothing": None},
                ],
                group_ids=["g0", "g0", 7],
                id="golden-mixed-list",
            ),
        ),
        GoldenCase(
            name="request_json",
            kind="request",
            content_type=JSON,
            description="A JSON request (as curl users send it): raw 1x2 and PNG images, data as base64 text.",
            message=ScoreRequest(
                images=[_pixels([[[255, 255, 0], [0, 255, 255]]]), EncodedImage(format="png", data=PNG_2X2)],
                prompts=["a yellow and cyan strip", "four coloured pixels"],
                metadata=[{"score_hint": 1.25}, None],
                group_ids=[0, 0],
                id="golden-json",
            ),
        ),
        GoldenCase(
            name="response_item_error",
            kind="response",
            content_type=MSGPACK,
            description=(
                "Three items, two score lists; item 1 failed (nil scores, an error); details for items 0 and 2; "
                "integral scores still travel as float64."
            ),
            message=ScoreResponse(
                scores={"score": [0.75, None, -1.5], "strict": [1.0, None, 0.0]},
                errors=[None, ItemError(code="bad_image", message="images[1]: not a decodable PNG file"), None],
                details=[{"matched": ["cat", "cat"], "boxes": 2}, None, {"matched": [], "boxes": 0}],
                id="golden-mixed-list",
                service="geneval",
                model="mask2former-swin-s",
                model_version="1.0.0",
                timing={"queue_ms": 1.5, "score_ms": 12.25},
            ),
        ),
        GoldenCase(
            name="error_invalid_request",
            kind="error",
            content_type=MSGPACK,
            description="A whole-request error body (HTTP 422) naming the offending field.",
            message=ErrorBody(
                code="invalid_request", message="prompts[1]: expected a string, got int", field="prompts[1]"
            ),
        ),
    ]


def to_value(case: GoldenCase) -> dict:
    """The case's message as plain values, in canonical key order."""
    if case.kind == "request":
        return request_to_value(case.message)  # type: ignore[arg-type]
    if case.kind == "response":
        return response_to_value(case.message)  # type: ignore[arg-type]
    return error_to_value(case.message)  # type: ignore[arg-type]


def encode(case: GoldenCase) -> bytes:
    """The case's body bytes, as this binding encodes them."""
    return dump(to_value(case), case.content_type)


def _logical(value: Any) -> Any:
    """Plain values as JSON, binary as {"$bin": hex}, so any language can compare."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bin": bytes(value).hex()}
    if isinstance(value, dict):
        return {k: _logical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_logical(v) for v in value]
    return value


def sidecar(case: GoldenCase, body: bytes) -> dict:
    """What a decoder of `body` must find: its digest and its content, key order as on the wire."""
    return {
        "case": case.name,
        "kind": case.kind,
        "content_type": case.content_type,
        "description": case.description,
        "body_file": case.body_file,
        "body_size": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "binary_fields": "base64 text in the body" if case.content_type == JSON else "msgpack bin",
        "decoded": _logical(msgpack.unpackb(msgpack.packb(to_value(case), use_bin_type=True), raw=False)),
    }


def _sidecar_text(case: GoldenCase, body: bytes) -> str:
    return json.dumps(sidecar(case, body), indent=2, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    """Write every case's body and sidecar into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for case in cases():
        body = encode(case)
        (directory / case.body_file).write_bytes(body)
        (directory / case.sidecar_file).write_text(_sidecar_text(case, body), encoding="utf-8")
        written += [directory / case.body_file, directory / case.sidecar_file]
    return written


def check(directory: Path) -> list[str]:
    """The files in `directory` that differ from what this binding encodes (empty when all match)."""
    stale = []
    for case in cases():
        body = encode(case)
        body_path, sidecar_path = directory / case.body_file, directory / case.sidecar_file
        if not body_path.exists() or body_path.read_bytes() != body:
            stale.append(str(body_path))
        if not sidecar_path.exists() or sidecar_path.read_text(encoding="utf-8") != _sidecar_text(case, body):
            stale.append(str(sidecar_path))
    return stale


def main(argv: list[str] | None = None) -> int:
    """CLI: --write DIR regenerates the vectors, --check DIR reports stale ones (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m rewardflow_proto.golden", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="DIR", help="write the golden vectors into DIR")
    group.add_argument("--check", type=Path, metavar="DIR", help="compare DIR with what the binding encodes")
    args = parser.parse_args(argv)
    if args.write:
        for path in write(args.write):
            print(path)
        return 0
    stale = check(args.check)
    for path in stale:
        print(f"stale: {path}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
