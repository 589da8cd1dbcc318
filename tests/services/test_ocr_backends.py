"""OCR backends: crash isolation, batching across images, model folders, and the errors that say what to install."""

from __future__ import annotations

import shutil
import sys
import types
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from ocr_faults import RedCrashBackend, RedCrashOcrScorer
from ocr_renders import render
from rewardflow_kit import Batch
from rewardflow_ocr.backends import PaddleOcrBackend, RapidOcrBackend, cuda_index
from rewardflow_ocr.scorer import OcrScorer
from rewardflow_ocr.settings import OcrSettings
from rewardflow_proto import ScoreRequest, decode_response, encode_request
from service_calls import MSGPACK

RED = np.zeros((128, 128, 3), dtype=np.uint8)
RED[..., 0] = 255


def batch(images: list[np.ndarray], prompts: list[str]) -> Batch:
    return Batch(images=images, prompts=prompts, metadata=[{}] * len(images), group_ids=[None] * len(images))


@pytest.fixture(scope="module")
def rapid_scorer() -> OcrScorer:
    scorer = OcrScorer()
    scorer.load()
    return scorer


def test_crash_on_one_image_scores_it_zero_with_the_error_others_still_read(rapid_scorer: OcrScorer) -> None:
    faulty = OcrScorer()
    wrapper = RedCrashBackend(rapid_scorer.backend)
    faulty.backend = wrapper
    out = faulty.score(batch([render("Hello"), RED, render("World")], ['"Hello"', '"red"', '"World"']))
    assert [o.scores["accuracy"] for o in out] == [1.0, 0.0, 1.0]
    assert out[1].details["error"] == "RuntimeError: simulated OCR engine crash on a red image"
    assert out[1].details["distance"] == 3
    assert "error" not in out[0].details
    assert wrapper.calls == [3, 1, 1, 1], "one batched call, then one call per image"


def test_crash_isolation_over_http(service_process: Callable) -> None:
    service = service_process("ocr_faults:RedCrashOcrScorer", timeout_s=120)
    images = [render("Hello", size=256), np.ascontiguousarray(np.broadcast_to(RED[:1, :1], (256, 256, 3)))]
    body = encode_request(ScoreRequest(images=images, prompts=['"Hello"', '"red"']), MSGPACK)
    reply = httpx.post(service.url + "/v1/score", content=body, headers={"content-type": MSGPACK}, timeout=120)
    assert reply.status_code == 200
    response = decode_response(reply.content, MSGPACK)
    assert response.errors == [None, None], "an OCR crash is a 0 score, not an item error"
    assert response.scores["accuracy"] == [1.0, 0.0]
    assert "simulated OCR engine crash" in response.details[1]["error"]
    assert isinstance(RedCrashOcrScorer(), OcrScorer)


def test_lines_of_several_images_are_recognized_in_one_call(rapid_scorer: OcrScorer) -> None:
    backend = rapid_scorer.backend
    assert isinstance(backend, RapidOcrBackend)
    seen: list[int] = []
    real = backend.engine.text_rec

    def spy(crops: list[np.ndarray], *args: object) -> object:
        seen.append(len(crops))
        return real(crops, *args)

    two_lines = np.minimum(render("upper line", center=(0.5, 0.3)), render("lower line", center=(0.5, 0.7)))
    backend.engine.text_rec = spy
    try:
        readings = backend.read([two_lines, render("single")])
    finally:
        backend.engine.text_rec = real
    assert seen == [3]
    assert readings[0].lines == ["upper line", "lower line"], "lines come in reading order"
    assert readings[1].lines == ["single"]
    assert all(c >= 0.5 for r in readings for c in r.confidences)


def test_model_folder_with_det_and_rec_onnx_is_used(tmp_path: Path) -> None:
    import rapidocr_onnxruntime

    bundled = Path(rapidocr_onnxruntime.__file__).parent / "models"
    shutil.copy(bundled / "ch_PP-OCRv4_det_infer.onnx", tmp_path / "det.onnx")
    shutil.copy(bundled / "ch_PP-OCRv4_rec_infer.onnx", tmp_path / "rec.onnx")
    backend = RapidOcrBackend(OcrSettings(), str(tmp_path), "cpu")
    backend.load()
    assert backend.engine.text_det.infer.session._model_path == str(tmp_path / "det.onnx")
    assert backend.read([render("folder")])[0].lines == ["folder"]


def test_model_folder_without_models_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "det.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"missing: rec\.onnx"):
        RapidOcrBackend(OcrSettings(), str(tmp_path), "cpu").load()


def test_cuda_without_onnxruntime_gpu_is_a_clear_error() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(RuntimeError, match="needs onnxruntime-gpu"):
        RapidOcrBackend(OcrSettings(), "", "cuda:1").load()


@pytest.mark.parametrize(("device", "index"), [("cpu", None), ("cuda", 0), ("cuda:2", 2), ("GPU:1", 1)])
def test_device_names(device: str, index: int | None) -> None:
    assert cuda_index(device) == index


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="'tpu' is not understood"):
        cuda_index("tpu")


def test_paddleocr_backend_without_paddleocr_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paddleocr", None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match=r"pip install 'rewardflow-ocr\[paddle\]'"):
        PaddleOcrBackend(OcrSettings(backend="paddleocr"), "", "cpu").load()


def fake_paddleocr(monkeypatch: pytest.MonkeyPatch, version: str, engine: type) -> dict:
    """Install a stand-in `paddleocr` module (the real one needs paddlepaddle and downloaded models)."""
    created: dict = {}

    def factory(**kwargs: object) -> object:
        created.update(kwargs)
        return engine()

    monkeypatch.setitem(sys.modules, "paddleocr", types.SimpleNamespace(PaddleOCR=factory))
    monkeypatch.setattr("rewardflow_ocr.backends.package_metadata.version", lambda name: version)
    return created


def test_paddleocr_3_default_models_are_english_pp_ocr_v4(monkeypatch: pytest.MonkeyPatch) -> None:
    created = fake_paddleocr(monkeypatch, "3.7.0", object)
    PaddleOcrBackend(OcrSettings(backend="paddleocr"), "paddleocr/en_PP-OCRv4", "cuda").load()
    assert (created["lang"], created["ocr_version"], created["device"]) == ("en", "PP-OCRv4", "gpu:0")
    assert created["cpu_threads"] == 1
    assert "text_detection_model_dir" not in created


def test_paddleocr_2_options_and_results(monkeypatch: pytest.MonkeyPatch) -> None:
    class Engine:
        def ocr(self, image: np.ndarray, cls: bool) -> list:
            assert cls is False and image.flags.c_contiguous
            if image.mean() > 250:
                return [None]  # PaddleOCR 2.x with no text found
            box = [[0, 0]] * 4
            return [[[box, ("BIG", 0.99)], [box, ("noise", 0.2)], [box, ("SALE", 0.9)]]]  # one image's lines

    created = fake_paddleocr(monkeypatch, "2.9.1", Engine)
    backend = PaddleOcrBackend(OcrSettings(backend="paddleocr"), "paddleocr/en_PP-OCRv4", "cuda:1")
    backend.load()
    assert created["lang"] == "en" and created["use_angle_cls"] is False
    assert (created["use_gpu"], created["gpu_id"], created["cpu_threads"]) == (True, 1, 1)
    readings = backend.read([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)])
    assert [r.lines for r in readings] == [["BIG", "SALE"], []]


def test_paddleocr_2_model_folder_gives_cls_and_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("det", "rec", "cls"):
        (tmp_path / name).mkdir()
    (tmp_path / "keys.txt").write_text("a\nb\n")
    created = fake_paddleocr(monkeypatch, "2.10.0", object)
    PaddleOcrBackend(OcrSettings(backend="paddleocr"), str(tmp_path), "cpu").load()
    assert created["det_model_dir"] == str(tmp_path / "det")
    assert created["cls_model_dir"] == str(tmp_path / "cls")
    assert created["rec_char_dict_path"] == str(tmp_path / "keys.txt")
    assert created["use_gpu"] is False


def test_paddleocr_model_folder_without_rec_is_refused(tmp_path: Path) -> None:
    (tmp_path / "det").mkdir()
    with pytest.raises(FileNotFoundError, match="det/ and rec/"):
        PaddleOcrBackend(OcrSettings(backend="paddleocr"), str(tmp_path), "cpu").load()


def test_paddleocr_3_options_and_results(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Engine:
        def predict(self, images: list[np.ndarray]) -> list[dict]:
            return [{"rec_texts": ["BIG", "noise", f"{i}"], "rec_scores": [0.99, 0.1, 0.8]} for i in range(len(images))]

    (tmp_path / "det").mkdir()
    (tmp_path / "rec").mkdir()
    created = fake_paddleocr(monkeypatch, "3.7.0", Engine)
    backend = PaddleOcrBackend(OcrSettings(backend="paddleocr"), str(tmp_path), "cpu")
    backend.load()
    assert "lang" not in created, "PaddleOCR 3.x ignores lang next to model dirs, with a warning"
    assert created["use_textline_orientation"] is False
    assert created["device"] == "cpu"
    assert created["text_recognition_model_dir"] == str(tmp_path / "rec")
    readings = backend.read([np.zeros((8, 8, 3), np.uint8)] * 2)
    assert [r.lines for r in readings] == [["BIG", "0"], ["BIG", "1"]]


def test_scorer_picks_the_backend_and_its_default_model_from_settings() -> None:
    scorer = OcrScorer(OcrSettings(backend="paddleocr"))
    assert scorer.model_id == "paddleocr/en_PP-OCRv4"
    with pytest.raises(RuntimeError, match="called before load"):
        scorer.score(batch([RED], ['"x"']))
