"""rewardflow_ocr: the OCR text-rendering reward (Flow-GRPO's OCR reward) as a rewardflow service.

Score `accuracy` in [0, 1] per image. The target is the text between the first pair of double
quotes of the prompt (straight "..." or typographic \u201c...\u201d; an unclosed quote does not count),
else the image's metadata `target_text`; a request where some item has neither gets 422
`invalid_request` with field `prompts[i]`. Target and recognized text (the OCR lines in reading
order) lose all whitespace and are lower-cased; accuracy = 1 if the target occurs in the text,
else 1 - min(Levenshtein, len(target)) / len(target). Details per image: `recognized_text`
(lines joined by newlines), `target` (normalized), `distance` (plain Levenshtein, 0 if contained)
and, if the OCR engine raised on that image, `error`; such an image scores 0, as in the paper,
instead of failing its batch or becoming an item error.

Backends (REWARDFLOW_OCR_BACKEND):
- `rapidocr` (default): PP-OCRv4 detection + recognition in ONNX, shipped inside the
  rapidocr-onnxruntime wheel, so it runs with no network and no model volume. The recognizer sees
  the text lines of every image of a batch together. REWARDFLOW_MODEL may name a folder with
  det.onnx, rec.onnx (and keys.txt) instead. GPU: REWARDFLOW_DEVICE=cuda[:N] with onnxruntime-gpu
  installed in place of onnxruntime. Its recognizer is the Chinese+English PP-OCRv4 model, not the
  English-only one PaddleOCR picks for lang="en".
- `paddleocr`: PaddleOCR itself (2.x or 3.x; lang en, no angle classifier, PP-OCRv4), as the
  paper; `pip install 'rewardflow-ocr[paddle]'` (paddlepaddle-gpu for CUDA). Its models come from
  PaddleOCR's cache or download, or from REWARDFLOW_MODEL=<folder with det/ and rec/>.

Both use PaddleOCR's detection resize (longest side at most 960, never upscaled) and drop lines
below confidence 0.5. Settings beyond the kit's REWARDFLOW_*: see `OcrSettings`
(REWARDFLOW_OCR_BACKEND, _MIN_CONFIDENCE, _REC_BATCH_SIZE, _DET_LIMIT_SIDE_LEN, _THREADS).
"""

from rewardflow_ocr.scorer import OcrScorer

__all__ = ["OcrScorer"]
