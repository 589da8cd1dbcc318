"""Tiny random Mask2Former checkpoints (Swin backbone, 80 COCO labels) written like real ones: tests, benches."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from rewardflow_geneval.metadata import OBJECT_NAMES

# COCO's own spellings, as real transformers checkpoints carry them (GenEval renames three of them).
COCO_LABELS = tuple(
    {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}.get(n, n) for n in OBJECT_NAMES
)


def tiny_mask2former_config(num_queries: int = 20) -> Mask2FormerConfig:
    """A ~0.36M-parameter Mask2Former with a 4-stage Swin backbone and COCO's 80 instance labels."""
    backbone = SwinConfig(
        image_size=384,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=backbone,
        use_pretrained_backbone=False,
        num_labels=len(COCO_LABELS),
        id2label=dict(enumerate(COCO_LABELS)),
        label2id={name: i for i, name in enumerate(COCO_LABELS)},
        num_queries=num_queries,
        hidden_dim=32,
        mask_feature_size=32,
        feature_size=32,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
    )


def swin_small_config() -> Mask2FormerConfig:
    """The architecture of facebook/mask2former-swin-small-coco-instance (Swin-S, 100 queries, 256 wide, 10
    decoder layers: transformers' Mask2Former defaults) with COCO's labels; for benches with random weights."""
    return Mask2FormerConfig(
        num_labels=len(COCO_LABELS),
        id2label=dict(enumerate(COCO_LABELS)),
        label2id={name: i for i, name in enumerate(COCO_LABELS)},
        use_pretrained_backbone=False,
    )


def write_tiny_mask2former(
    directory: str | Path,
    *,
    seed: int = 0,
    shortest_edge: int = 384,
    num_queries: int = 20,
    favour_class: str | None = None,
) -> Path:
    """Save a tiny random Mask2Former + Mask2FormerImageProcessor config in `directory` (safetensors).

    favour_class: bias the class head so every query predicts this GenEval class with probability ~1,
    so that a random model still "detects" something (confidence = that probability x mask score).
    """
    config = tiny_mask2former_config(num_queries)
    return write_mask2former(directory, config, seed=seed, shortest_edge=shortest_edge, favour_class=favour_class)


def write_mask2former(
    directory: str | Path,
    config: Mask2FormerConfig,
    *,
    seed: int = 0,
    shortest_edge: int = 384,
    favour_class: str | None = None,
) -> Path:
    """A random Mask2Former of `config` with its processor config saved in `directory` (see write_tiny_mask2former)."""
    directory = Path(directory)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Mask2FormerForUniversalSegmentation(config)
    finally:
        torch.random.set_rng_state(state)
    if favour_class is not None:
        label = OBJECT_NAMES.index(favour_class)
        with torch.no_grad():
            model.class_predictor.bias[label] += 30.0
    model.save_pretrained(directory, safe_serialization=True)
    write_mask2former_processor(directory, shortest_edge)
    return directory


def write_mask2former_processor(directory: Path, shortest_edge: int = 384) -> None:
    """A Mask2FormerImageProcessor config (bilinear resize, ImageNet mean/std, size divisor 32) in `directory`."""
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    Mask2FormerImageProcessorPil(
        size={"shortest_edge": shortest_edge, "longest_edge": 1333}, size_divisor=32, ignore_index=255
    ).save_pretrained(directory)
