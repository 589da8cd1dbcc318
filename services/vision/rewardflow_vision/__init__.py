"""rewardflow_vision: torch image code shared by the reward services (not a service itself).

- `ImagePreprocess`: batched uint8 (N, H, W, 3) -> normalised float (N, 3, h, w) on the model's device,
  CLIPImageProcessor semantics (shortest-side resize, bicubic with antialias, center crop, mean/std)
  without a PIL round trip; `ImagePreprocess.from_pretrained(source)` reads preprocessor_config.json.
- `resolve_source`, `load_pretrained`, `parse_device`, `parse_dtype`, `hub_offline`: load any
  `from_pretrained` class from a Hugging Face id or a local directory, offline when HF_HUB_OFFLINE=1,
  in the dtype and on the device the settings name, with errors that name the setting. A hub id that is
  neither cached nor downloadable (offline, or the hub unreachable: one probe, no retries) fails at once
  with `ModelNotCached`, one line; a cached one loads from the cache when the hub does not answer.
- `load_state_dict_file`: tensors from .safetensors, or a torch file loaded with weights_only=True.
- `ModelSettings`: REWARDFLOW_DTYPE, REWARDFLOW_REVISION, REWARDFLOW_PROCESSOR (env vars).
- `ClipEmbedder`, `ClipImageEmbedder` (vision tower only): CLIP embeddings (unit, float32) for
  batches; used by pickscore, clipscore and aesthetic.
- `rewardflow_vision.tiny`: tiny random CLIP checkpoints written to a directory, for tests and benches.

A scorer typically does, in `load()`:

```python
settings = ModelSettings()
device = parse_device(self.device)
dtype = parse_dtype(settings.dtype, device)
model = load_pretrained(SomeModel, resolve_source(self.model_id, settings.revision), device=device, dtype=dtype)
preprocess = ImagePreprocess.from_pretrained(resolve_source(settings.processor or self.model_id))
```
and in `score()`: `pixels = preprocess(batch.images, device=device, dtype=dtype)`.
"""

from rewardflow_vision.clip import CLIP_MAX_TOKENS, ClipEmbedder, ClipImageEmbedder
from rewardflow_vision.hub import ModelNotCached, cached_snapshot, hub_unreachable
from rewardflow_vision.loading import (
    ModelSource,
    hub_offline,
    load_pretrained,
    load_state_dict_file,
    parse_device,
    parse_dtype,
    resolve_source,
)
from rewardflow_vision.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocess, center_crop
from rewardflow_vision.settings import ModelSettings

__all__ = [
    "CLIP_MAX_TOKENS",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ClipEmbedder",
    "ClipImageEmbedder",
    "ImagePreprocess",
    "ModelNotCached",
    "ModelSettings",
    "ModelSource",
    "cached_snapshot",
    "center_crop",
    "hub_offline",
    "hub_unreachable",
    "load_pretrained",
    "load_state_dict_file",
    "parse_device",
    "parse_dtype",
    "resolve_source",
]
