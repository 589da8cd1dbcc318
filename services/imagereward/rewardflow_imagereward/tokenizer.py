"""The released text side: BERT base uncased WordPiece plus BLIP's two extra tokens, 35 tokens per prompt.

THUDM/ImageReward's `init_tokenizer()`: `BertTokenizer.from_pretrained('bert-base-uncased')`, then
`add_special_tokens({'bos_token': '[DEC]'})` and `add_special_tokens({'additional_special_tokens': ['[ENC]']})`
(ids 30522 and 30523: the text encoder's vocabulary is 30524). The reward path keeps the leading [CLS]
(it never swaps in [ENC]), pads to `max_length` 35 and truncates.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rewardflow_vision import ModelSource, resolve_source
from rewardflow_vision.loading import where
from transformers import BertTokenizer, PreTrainedTokenizerBase

from rewardflow_imagereward.model import TEXT_MAX_LENGTH

RELEASED_TOKENIZER = "bert-base-uncased"
"""What the released code loads; the THUDM/ImageReward repository itself holds no tokenizer files."""
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def tokenizer_source(processor: str | None, model: ModelSource, revision: str | None = None) -> ModelSource:
    """REWARDFLOW_PROCESSOR if set; else the model directory when it holds a tokenizer; else bert-base-uncased."""
    if processor:
        return resolve_source(processor, revision, field="REWARDFLOW_PROCESSOR")
    if model.local and any((Path(model.name_or_path) / name).is_file() for name in _TOKENIZER_FILES):
        return model
    # The hub id takes no revision of ours: REWARDFLOW_REVISION names a revision of the ImageReward repository.
    return resolve_source(RELEASED_TOKENIZER, None, field="REWARDFLOW_PROCESSOR")


def load_tokenizer(source: ModelSource, vocab_size: int) -> PreTrainedTokenizerBase:
    """BERT tokenizer from `source` with [DEC] and [ENC] added; its ids must fit the text encoder's `vocab_size`."""
    try:
        tokenizer = BertTokenizer.from_pretrained(source.name_or_path, **source.from_pretrained_kwargs())
    except OSError as exc:
        raise OSError(
            f"{source.field}={source.name_or_path!r}: cannot load the BERT tokenizer ({where(source)}): {exc}"
        ) from exc
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"{source.field}={source.name_or_path!r}: tokenizer has {len(tokenizer)} tokens with [DEC] and [ENC], "
            f"more than the text encoder's vocab_size {vocab_size} (med_config.json); expected bert-base-uncased"
        )
    return tokenizer


def tokenize(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """prompts -> (input_ids, attention_mask), both (B, 35) long on `device`, as the released `score()` calls it."""
    encoded = tokenizer(prompts, padding="max_length", truncation=True, max_length=TEXT_MAX_LENGTH, return_tensors="pt")
    return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
