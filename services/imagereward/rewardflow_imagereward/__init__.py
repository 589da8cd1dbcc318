"""rewardflow_imagereward: the ImageReward reward service (Xu et al. 2023) on maintained components.

## What it scores

`score` = ImageReward's published normalised preference score for one (prompt, image) pair,
`(raw - 0.16717362830052426) / 1.0333394966054072`, where `raw` (also returned) is the reward head's
output. Higher is better; about N(0, 1) over the images the authors normalised on. Reward names:
`imagereward` (= `imagereward_score`) and `imagereward_raw`.

## How the released model runs here (THUDM/ImageReward, `ImageReward/ImageReward.py`)

The release is `ImageReward.pt` (a plain state dict of the `ImageReward` module) and `med_config.json`
(BLIP's BERT config); we do not use the unmaintained `image-reward` package (timm 0.6 + fairscale pins,
undeclared OpenAI `clip`, broken on transformers 5, a 5-token tokenizer when offline).

- Weights: read with `torch.load(weights_only=True)` (tensors only, never arbitrary pickles) and
  renamed onto transformers' BLIP modules (`checkpoint.py`): `blip.visual_encoder.*` →
  `vision_model.*` (`BlipVisionModel`: `blocks`→`encoder.layers`, `attn`→`self_attn`,
  `attn.proj`→`self_attn.projection`, `norm1/2`→`layer_norm1/2`, `norm`→`post_layernorm`,
  `patch_embed.proj`→`embeddings.patch_embedding`, `pos_embed`→`embeddings.position_embedding`,
  `cls_token`→`embeddings.class_embedding`), `blip.text_encoder.*` → `text_encoder.*` unchanged
  (`BlipTextModel`, BLIP's med.py port), `mlp.layers.*` unchanged (`RewardHead`). These are the
  key names of `BlipForImageTextRetrieval`; we hold only its vision model and text encoder (no
  retrieval/ITM heads, which the release lacks). Loading is strict: any missing or unexpected key
  is an error; the only keys dropped are the five the reward never reads (`blip.vision_proj.*`,
  `blip.text_proj.*`, the `position_ids` buffer). The model is built on the meta device and the
  checkpoint assigned, so no time goes into a random init of ~470M parameters.
- Architecture: ViT-L/16 at 224 px (1024 wide, 24 blocks, 16 heads, MLP 4096, LayerNorm eps 1e-6)
  fixed in code as in the release; BERT-base from `med_config.json` with cross-attention in every
  layer reading the image states (`encoder_width` is set to the ViT width, as BLIP does). Forward:
  image states → text encoder (bidirectional, all-ones image mask) → [CLS] → head in float32
  (`Linear(768,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout Linear(64,16)
  Linear(16,1)`, no activations) → normalise. An optional `vision_config.json` next to the weights
  (not in the release) describes another ViT size; the tests' tiny models use it.
- Text: `bert-base-uncased` WordPiece + `[DEC]` (bos) and `[ENC]` added as special tokens (ids 30522,
  30523; vocab 30524), `padding="max_length", truncation=True, max_length=35`; the leading token stays
  [CLS]. The THUDM repository has no tokenizer: it comes from REWARDFLOW_PROCESSOR, else from the
  model directory when it holds `vocab.txt`/`tokenizer.json`, else from the hub id
  `bert-base-uncased` (cache only when HF_HUB_OFFLINE=1).
- Images: the released `Resize(224, BICUBIC)` on the shorter side, `CenterCrop(224)`, `ToTensor`,
  CLIP mean/std, done batched in torch on the model's device from the uint8 arrays the kit decodes
  (`rewardflow_vision.ImagePreprocess`: PIL's bicubic kernel with uint8 rounding between the two
  passes, torchvision's crop offset `round((H - 224) / 2)`). No PIL round trip. Measured against the
  PIL transform: within one grey level (see tests/services/test_imagereward_scores.py).

## Settings (env vars, beside the kit's)

| variable | default | meaning |
|---|---|---|
| `REWARDFLOW_MODEL` | `THUDM/ImageReward` | Hub id (ImageReward.pt + med_config.json) or a local directory with them. |
| `REWARDFLOW_DEVICE` | `cuda` if available, else `cpu` | Device of the model and of the preprocessing. |
| `REWARDFLOW_DTYPE` | `auto` | Backbone dtype (auto: float16 on CUDA, float32 on CPU); the head is float32. |
| `REWARDFLOW_REVISION` | unset | Revision of the ImageReward hub repository. |
| `REWARDFLOW_PROCESSOR` | see Text | Tokenizer id or directory (BERT base uncased vocabulary). |
| `HF_HUB_OFFLINE` | unset | `1`: read the Hugging Face cache only, never the network. |
"""

from rewardflow_imagereward.scorer import ImageRewardScorer

__all__ = ["ImageRewardScorer"]
