"""Model loading for reward services: HF id or local directory, offline flags, dtype and device from settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from rewardflow_vision.hub import load_from_cache_only

_TRUE = {"1", "true", "yes", "on"}
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

ModelT = TypeVar("ModelT")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set to a true value: load from the cache only."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@dataclass(frozen=True)
class ModelSource:
    """Where a model (or processor) comes from: a local directory, or a Hugging Face id (cache or hub)."""

    name_or_path: str
    local: bool
    local_files_only: bool
    revision: str | None = None
    field: str = "REWARDFLOW_MODEL"
    """The setting it came from, named in error messages."""

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `from_pretrained` (transformers, diffusers, huggingface_hub)."""
        kwargs: dict[str, Any] = {"local_files_only": self.local_files_only}
        if self.revision is not None and not self.local:
            kwargs["revision"] = self.revision
        return kwargs


def resolve_source(name_or_path: str, revision: str | None = None, field: str = "REWARDFLOW_MODEL") -> ModelSource:
    """A local directory if `name_or_path` is one, else a Hugging Face id: from the cache only when HF_HUB_OFFLINE
    says so or the hub does not answer (hub.load_from_cache_only); ModelNotCached, in one line, when neither the
    cache nor the hub can provide it."""
    if not name_or_path:
        raise ValueError(f"{field} is empty; expected a Hugging Face id such as 'org/name' or a local model directory")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return ModelSource(str(path), local=True, local_files_only=True, revision=None, field=field)
    if path.exists() or name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(
            f"{field}={name_or_path!r} is not a directory; expected a local model directory "
            "(with config.json) or a Hugging Face id such as 'org/name'"
        )
    cache_only = load_from_cache_only(field, name_or_path, revision, hub_offline())
    return ModelSource(name_or_path, local=False, local_files_only=cache_only, revision=revision, field=field)


def parse_device(name: str, field: str = "REWARDFLOW_DEVICE") -> torch.device:
    """'cpu', 'cuda', 'cuda:1', 'mps' -> torch.device; an error naming `field` if it is unknown or absent here."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{field}={name!r} is not a device; expected 'cpu', 'cuda', 'cuda:<index>' or 'mps'") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{field}={name!r} but CUDA is not available on this machine; expected 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{field}={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{field}={name!r} but MPS is not available on this machine; expected 'cpu'")
    return device


def parse_dtype(name: str, device: torch.device, field: str = "REWARDFLOW_DTYPE") -> torch.dtype:
    """'auto' (float16 on CUDA, float32 elsewhere), 'float32'/'fp32', 'float16'/'fp16', 'bfloat16'/'bf16'."""
    key = name.strip().lower()
    if key == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[key]
    except KeyError:
        raise ValueError(f"{field}={name!r} is not a dtype; expected 'auto' or one of {sorted(_DTYPES)}") from None


def load_pretrained(
    cls: type[ModelT], source: ModelSource, *, device: torch.device, dtype: torch.dtype, **kwargs: Any
) -> ModelT:
    """`cls.from_pretrained(source)` in `dtype`, moved to `device`, in eval mode with gradients off."""
    try:
        model = cls.from_pretrained(  # type: ignore[attr-defined]
            source.name_or_path, dtype=dtype, **source.from_pretrained_kwargs(), **kwargs
        )
    except OSError as exc:
        raise OSError(
            f"{source.field}={source.name_or_path!r}: cannot load {cls.__name__} ({where(source)}): {exc}"
        ) from exc
    return model.to(device).eval().requires_grad_(False)


def where(source: ModelSource) -> str:
    """A phrase saying where `source` was looked for, for error messages."""
    if source.local:
        return f"local directory {source.name_or_path}"
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
    if source.local_files_only:
        return f"offline (HF_HUB_OFFLINE): only the cache at {cache} was searched"
    return f"Hugging Face hub, cache at {cache}"


def load_state_dict_file(path: str | Path, field: str = "weights") -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a torch state dict loaded with weights_only=True (no pickled code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{field}={str(path)!r}: no such file; expected a .safetensors or .pth state dict")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error names the forbidden global; say what we expected
        raise ValueError(
            f"{field}={str(path)!r} is not a plain tensor state dict (loaded with weights_only=True): {exc}"
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{field}={str(path)!r} holds a {type(state).__name__}; expected a dict of name -> tensor")
    others = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise ValueError(
            f"{field}={str(path)!r}: entries {others[:5]} are not tensors (a training checkpoint?); "
            "expected a plain state dict of name -> tensor"
        )
    return state
