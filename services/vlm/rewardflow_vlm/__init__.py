"""rewardflow_vlm: vision-language judges behind one seam, for the unifiedreward, qwenvl and deqa services.

- `JudgeQuery` (images, text) -> an answer text, or a `JudgeFailure` in that query's slot;
- `make_backend(VLMSettings(), model, device)`: `served` (an OpenAI-compatible chat-completions server such as
  sglang's launch_server or vLLM: data-URL images, API key, concurrency limit, timeouts, tenacity retries) or
  `in-process` (transformers loads a Qwen2-VL-family model here);
- `rewardflow_vlm.tiny`: tiny random Qwen2-VL judges written like real checkpoints, for tests and benches.
"""

from rewardflow_vlm.backend import VLMBackend, make_backend, required_models
from rewardflow_vlm.query import JudgeFailure, JudgeQuery
from rewardflow_vlm.settings import VLMSettings

__all__ = ["JudgeFailure", "JudgeQuery", "VLMBackend", "VLMSettings", "make_backend", "required_models"]
