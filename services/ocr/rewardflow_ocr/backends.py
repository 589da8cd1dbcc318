"""OCR engines behind one interface: RapidOCR (PP-OCRv4 in ONNX, offline) and PaddleOCR (the paper's).

A backend turns RGB uint8 images into the text lines it reads, in reading order (top to bottom, left
to right). It may raise for a whole call; the scorer then reads the images one by one so that a
crash costs only the image that caused it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rewardflow_ocr.settings import OcrSettings

RAPIDOCR_BUNDLED = "rapidocr-onnxruntime/ch_PP-OCRv4"
"""model_id of the det/rec models inside the rapidocr-onnxruntime wheel (PP-OCRv4, Chinese + English)."""
PADDLE_DEFAULT = "paddleocr/en_PP-OCRv4"
"""model_id meaning "PaddleOCR's own English models, from its cache or its download"."""


@dataclass
class Reading:
    """What an engine read in one image: text lines in reading order and their confidences."""

    lines: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The lines joined by newlines (whitespace, so it vanishes when the text is normalized)."""
        return "\n".join(self.lines)


class OcrBackend(Protocol):
    """An OCR engine: load once, then read batches of RGB uint8 (H, W, 3) images."""

    def load(self) -> None: ...

    def read(self, images: list[np.ndarray]) -> list[Reading]: ...


def cuda_index(device: str) -> int | None:
    """None for "cpu", the GPU index for "cuda" / "cuda:N" / "gpu:N"; ValueError otherwise."""
    match = re.fullmatch(r"(cpu)|(?:cuda|gpu)(?::(\d+))?", device.strip().lower())
    if match is None:
        raise ValueError(f"device {device!r} is not understood; expected 'cpu', 'cuda' or 'cuda:N'")
    if match.group(1):
        return None
    return int(match.group(2) or 0)


def cpu_threads(settings: OcrSettings) -> int:
    """settings.threads, or for 0 the CPUs in this process's affinity mask (which follows taskset and cpusets)."""
    return settings.threads or len(os.sched_getaffinity(0))


class RapidOcrBackend:
    """PP-OCR det + rec through rapidocr-onnxruntime; the recognizer sees the lines of all images at once.

    model_id: RAPIDOCR_BUNDLED, or a directory holding det.onnx, rec.onnx and optionally keys.txt
    (the character list, for a rec model that does not embed it).
    """

    def __init__(self, settings: OcrSettings, model_id: str, device: str) -> None:
        self.settings = settings
        self.model_id = model_id
        self.gpu = cuda_index(device)
        self.engine: Any = None

    def model_paths(self) -> dict[str, str]:
        """RapidOCR's model keyword arguments for self.model_id ({} for the bundled models)."""
        if self.model_id in ("", RAPIDOCR_BUNDLED):
            return {}
        folder = Path(self.model_id)
        missing = [name for name in ("det.onnx", "rec.onnx") if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"REWARDFLOW_MODEL={self.model_id!r} for the rapidocr backend must be {RAPIDOCR_BUNDLED!r} or a "
                f"directory holding det.onnx and rec.onnx (optionally keys.txt); missing: {', '.join(missing)}"
            )
        paths = {"det_model_path": str(folder / "det.onnx"), "rec_model_path": str(folder / "rec.onnx")}
        if (folder / "keys.txt").is_file():
            paths["rec_keys_path"] = str(folder / "keys.txt")
        return paths

    def load(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        options: dict[str, Any] = {
            "use_cls": False,  # the paper runs PaddleOCR with use_angle_cls=False
            "print_verbose": False,
            "text_score": self.settings.min_confidence,
            # PaddleOCR's detection defaults (shrink the longest side to 960, never upscale); RapidOCR's
            # own ("min" 736) upscales a 512 px image and costs ~4x the time for no gain on rendered text.
            "det_limit_type": "max",
            "det_limit_side_len": self.settings.det_limit_side_len,
            "rec_batch_num": self.settings.rec_batch_size,
            **self.model_paths(),
        }
        options["intra_op_num_threads"] = cpu_threads(self.settings)
        self.engine = RapidOCR(**options)
        if self.gpu is not None:
            self.move_to_gpu(self.gpu)

    def move_to_gpu(self, index: int) -> None:
        """Rebuild the det and rec sessions on CUDA device `index` (RapidOCR 1.4 only knows device 0)."""
        import onnxruntime

        available = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                f"device cuda:{index} needs onnxruntime-gpu (CUDAExecutionProvider); this onnxruntime "
                f"{onnxruntime.__version__} offers {available}. Replace onnxruntime by onnxruntime-gpu, or set "
                "REWARDFLOW_DEVICE=cpu"
            )
        for wrapper in (self.engine.text_det.infer, self.engine.text_rec.session):
            old = wrapper.session
            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
            wrapper.session = onnxruntime.InferenceSession(old._model_path, sess_options=options, providers=providers)
            if wrapper.session.get_providers()[0] != "CUDAExecutionProvider":
                raise RuntimeError(f"onnxruntime did not place the OCR model on cuda:{index}; check CUDA and cuDNN")

    def read(self, images: list[np.ndarray]) -> list[Reading]:
        engine = self.engine
        crops: list[np.ndarray] = []
        owners: list[int] = []
        for i, image in enumerate(images):
            bgr = np.ascontiguousarray(image[..., ::-1])  # RapidOCR takes arrays as OpenCV BGR
            resized, _, _ = engine.preprocess(bgr)
            padded, _ = engine.maybe_add_letterbox(resized, {})
            boxes, _ = engine.auto_text_det(padded)  # sorted in reading order; None when there is no text
            if boxes is not None:
                image_crops = engine.get_crop_img_list(padded, boxes)
                crops.extend(image_crops)
                owners.extend([i] * len(image_crops))
        readings = [Reading() for _ in images]
        if crops:
            recognized, _ = engine.text_rec(crops)
            for owner, (text, confidence, *_rest) in zip(owners, recognized, strict=True):
                if float(confidence) >= self.settings.min_confidence:
                    readings[owner].lines.append(str(text))
                    readings[owner].confidences.append(float(confidence))
        return readings


class PaddleOcrBackend:
    """PaddleOCR itself (lang en, no angle classifier), as the paper; PaddleOCR 2.x and 3.x APIs.

    model_id: PADDLE_DEFAULT (PaddleOCR's own English PP-OCRv4 models, from ~/.paddleocr or its
    download), or a directory with det/ and rec/ inference-model folders, optionally cls/ (2.x
    fetches it even unused) and keys.txt (the rec model's character list, 2.x).
    """

    def __init__(self, settings: OcrSettings, model_id: str, device: str) -> None:
        self.settings = settings
        self.model_id = model_id
        self.gpu = cuda_index(device)
        self.engine: Any = None
        self.major = 0

    def model_dirs(self) -> dict[str, str] | None:
        """det/rec (and, if present, cls/ and keys.txt) of a local model folder; None for PaddleOCR's defaults."""
        if self.model_id in ("", PADDLE_DEFAULT):
            return None
        folder = Path(self.model_id)
        if not (folder / "det").is_dir() or not (folder / "rec").is_dir():
            raise FileNotFoundError(
                f"REWARDFLOW_MODEL={self.model_id!r} for the paddleocr backend must be {PADDLE_DEFAULT!r} or a "
                "directory with det/ and rec/ PaddleOCR inference-model folders (optionally cls/ and keys.txt)"
            )
        found = {"det": str(folder / "det"), "rec": str(folder / "rec")}
        if (folder / "cls").is_dir():
            found["cls"] = str(folder / "cls")
        if (folder / "keys.txt").is_file():
            found["keys"] = str(folder / "keys.txt")
        return found

    def load(self) -> None:
        dirs = self.model_dirs()
        try:
            import paddleocr
        except ImportError as exc:
            raise RuntimeError(
                "REWARDFLOW_OCR_BACKEND=paddleocr needs the paddleocr and paddlepaddle packages (paddlepaddle-gpu "
                "for CUDA): pip install 'rewardflow-ocr[paddle]'; or use REWARDFLOW_OCR_BACKEND=rapidocr, which "
                f"runs the same PP-OCR models in onnxruntime ({exc})"
            ) from exc
        self.major = int(package_metadata.version("paddleocr").split(".")[0])
        if self.major >= 3:
            options: dict[str, Any] = {
                "use_doc_orientation_classify": False,
                "use_doc_unwarping": False,
                "use_textline_orientation": False,
                "text_det_limit_type": "max",
                "text_det_limit_side_len": self.settings.det_limit_side_len,
                "text_rec_score_thresh": self.settings.min_confidence,
                "text_recognition_batch_size": self.settings.rec_batch_size,
                "device": "cpu" if self.gpu is None else f"gpu:{self.gpu}",
                "cpu_threads": cpu_threads(self.settings),
            }
            if dirs is None:
                options.update(lang="en", ocr_version="PP-OCRv4")  # 3.x ignores both (and warns) given model dirs
            else:
                options["text_detection_model_dir"] = dirs["det"]
                options["text_recognition_model_dir"] = dirs["rec"]
        else:
            options = {
                "lang": "en",
                "use_angle_cls": False,
                "show_log": False,
                "det_limit_type": "max",
                "det_limit_side_len": self.settings.det_limit_side_len,
                "drop_score": self.settings.min_confidence,
                "rec_batch_num": self.settings.rec_batch_size,
                "use_gpu": self.gpu is not None,
                "gpu_id": self.gpu or 0,
                "cpu_threads": cpu_threads(self.settings),
            }
            if dirs is not None:
                options["det_model_dir"], options["rec_model_dir"] = dirs["det"], dirs["rec"]
                if "cls" in dirs:  # 2.x fetches the angle classifier even when it is off
                    options["cls_model_dir"] = dirs["cls"]
                if "keys" in dirs:  # a rec model trained on another character set than lang's
                    options["rec_char_dict_path"] = dirs["keys"]
        self.engine = paddleocr.PaddleOCR(**options)

    def read(self, images: list[np.ndarray]) -> list[Reading]:
        bgr = [np.ascontiguousarray(image[..., ::-1]) for image in images]  # PaddleOCR takes OpenCV BGR arrays
        if self.major >= 3:
            return [self.reading_v3(result) for result in self.engine.predict(bgr)]
        return [self.reading_v2(self.engine.ocr(image, cls=False)) for image in bgr]

    def reading_v3(self, result: Any) -> Reading:
        """PaddleOCR 3.x: a dict-like result with rec_texts and rec_scores (already filtered)."""
        texts, scores = list(result["rec_texts"]), [float(s) for s in result["rec_scores"]]
        keep = [i for i, s in enumerate(scores) if s >= self.settings.min_confidence]
        return Reading([str(texts[i]) for i in keep], [scores[i] for i in keep])

    def reading_v2(self, result: Any) -> Reading:
        """PaddleOCR 2.x: [[box, (text, confidence)], ...] for the one image, or [None] with no text."""
        lines = result[0] if result else None
        reading = Reading()
        for _box, (text, confidence) in lines or []:
            if float(confidence) >= self.settings.min_confidence:
                reading.lines.append(str(text))
                reading.confidences.append(float(confidence))
        return reading


BACKENDS: dict[str, type[RapidOcrBackend] | type[PaddleOcrBackend]] = {
    "rapidocr": RapidOcrBackend,
    "paddleocr": PaddleOcrBackend,
}
DEFAULT_MODELS = {"rapidocr": RAPIDOCR_BUNDLED, "paddleocr": PADDLE_DEFAULT}


def make_backend(settings: OcrSettings, model_id: str, device: str) -> OcrBackend:
    """The backend named by settings.backend (REWARDFLOW_OCR_BACKEND)."""
    backend = BACKENDS.get(settings.backend)
    if backend is None:
        raise ValueError(f"REWARDFLOW_OCR_BACKEND={settings.backend!r} is not one of {sorted(BACKENDS)}")
    return backend(settings, model_id, device)
