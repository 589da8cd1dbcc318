"""The in-process backend: transformers loads a Qwen2-VL-family judge (Qwen2-VL, Qwen2.5-VL) in this process.

No processor class is used: the tokenizer's chat template, the image processor (its PIL backend, so torchvision
is never needed) and the image-token expansion are done here, which is all Qwen2-VL's processor does for images.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from rewardflow_vision.loading import load_pretrained, parse_device, parse_dtype, resolve_source

from rewardflow_vlm.query import JudgeFailure, JudgeQuery, to_pil
from rewardflow_vlm.settings import VLMSettings

log = logging.getLogger("rewardflow.vlm")


def user_turn(query: JudgeQuery) -> list[dict[str, Any]]:
    """The chat messages of a query: one user turn with its images first, then its text."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in query.images]
    content.append({"type": "text", "text": query.text})
    return [{"role": "user", "content": content}]


def expand_image_tokens(text: str, image_token: str, counts: list[int]) -> str:
    """Replace the i-th `image_token` in `text` by counts[i] copies (one per merged vision patch)."""
    pieces = text.split(image_token)
    if len(pieces) - 1 != len(counts):
        raise ValueError(f"the chat template wrote {len(pieces) - 1} image tokens for {len(counts)} images")
    out = [pieces[0]]
    for count, piece in zip(counts, pieces[1:], strict=True):
        out.append(image_token * count + piece)
    return "".join(out)


class InProcessVLM:
    """A transformers image-text-to-text model with its tokenizer and image processor, greedy decoding."""

    kind = "in-process"

    def __init__(self, settings: VLMSettings, model: str, device: str) -> None:
        self.settings = settings
        self.model_id = model
        self.device_name = device
        self.model: Any = None
        self.tokenizer: Any = None
        self.image_processor: Any = None
        self.image_token = ""

    def load(self) -> None:
        """Load the model, tokenizer and image processor from REWARDFLOW_MODEL (a directory or a cached hub id)."""
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        device = parse_device(self.device_name)
        dtype = parse_dtype(self.settings.dtype, device, field="REWARDFLOW_VLM_DTYPE")
        if self.settings.dtype == "auto" and device.type == "cuda":
            dtype = torch.bfloat16  # what Qwen2-VL checkpoints are published in
        source = resolve_source(self.model_id, self.settings.revision)
        kwargs = source.from_pretrained_kwargs()
        self.tokenizer = AutoTokenizer.from_pretrained(source.name_or_path, **kwargs)
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        self.image_processor = AutoImageProcessor.from_pretrained(source.name_or_path, backend="pil", **kwargs)
        self.model = load_pretrained(AutoModelForImageTextToText, source, device=device, dtype=dtype)
        image_token_id = getattr(self.model.config, "image_token_id", None)
        if image_token_id is None:
            raise ValueError(f"REWARDFLOW_MODEL={self.model_id!r}: config has no image_token_id (not a Qwen2-VL?)")
        self.image_token = self.tokenizer.convert_ids_to_tokens(int(image_token_id))

    def inputs(self, queries: list[JudgeQuery]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask, pixel values and grids of a batch of queries, on the model's device."""
        images = [to_pil(image, q.resize_to) for q in queries for image in q.images]
        vision = self.image_processor(images=images, return_tensors="pt") if images else {}
        merge = int(getattr(self.image_processor, "merge_size", 2)) ** 2
        counts = [int(thw.prod()) // merge for thw in vision["image_grid_thw"]] if images else []
        texts, start = [], 0
        for query in queries:
            chat = self.tokenizer.apply_chat_template(user_turn(query), tokenize=False, add_generation_prompt=True)
            n = len(query.images)
            texts.append(expand_image_tokens(chat, self.image_token, counts[start : start + n]) + query.answer_prefix)
            start += n
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        # Qwen2-VL's M-RoPE needs to know which positions are image tokens (what its processor returns).
        image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        batch["mm_token_type_ids"] = (encoded["input_ids"] == image_id).long()
        if images:
            batch["pixel_values"] = vision["pixel_values"].to(self.model.dtype)
            batch["image_grid_thw"] = vision["image_grid_thw"]
        return {key: value.to(self.model.device) for key, value in batch.items()}

    @torch.inference_mode()
    def answer(self, queries: list[JudgeQuery]) -> list[str | JudgeFailure]:
        """Greedy answers to a batch of queries, in one generate call (the longest max_new_tokens of the batch)."""
        if self.model is None:
            raise RuntimeError("InProcessVLM.answer called before load()")
        if not queries:
            return []
        batch = self.inputs(queries)
        max_new = self.settings.max_new_tokens or max(q.max_new_tokens for q in queries)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(**batch, max_new_tokens=max_new, do_sample=False, pad_token_id=pad)
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        return list(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))

    @torch.inference_mode()
    def next_token_logits(self, queries: list[JudgeQuery], token_ids: list[int]) -> np.ndarray:
        """(N, len(token_ids)) float64 logits of the next token after each query's prompt and answer_prefix."""
        if self.model is None:
            raise RuntimeError("InProcessVLM.next_token_logits called before load()")
        logits = self.model(**self.inputs(queries)).logits[:, -1, :]
        return logits[:, token_ids].double().cpu().numpy()

    def first_token_id(self, word: str) -> int:
        """The id of the first token of `word` as it follows other text (with its leading space, if any)."""
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"the tokenizer of {self.model_id!r} encodes {word!r} as no token")
        return int(ids[0])

    def close(self) -> None:
        self.model = None
