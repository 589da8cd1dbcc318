"""The compose stack: a bare `docker compose up` trains the default preset on a CPU box, the GPU overlay only adds
GPUs, the trainer waits for and reaches every reward, and .env.example names every variable."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_compose import NOT_REWARDS, environment, rule_violations, schema_errors

REPO_ROOT = Path(__file__).resolve().parents[2]
GPU_OVERLAY = REPO_ROOT / "compose.gpu.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DEFAULT_PRESET = "shapes_geneval"
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"


@pytest.fixture(scope="module")
def overlay() -> dict[str, Any]:
    """compose.gpu.yaml parsed."""
    return yaml.safe_load(GPU_OVERLAY.read_text())


def merged(base: Any, overlay: Any) -> Any:
    """Compose's merge of an overlay file for what ours use: mappings merge key by key, other values replace."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {key: merged(base[key], value) if key in base else value for key, value in overlay.items()} | {
            key: value for key, value in base.items() if key not in overlay
        }
    return overlay


def rewards(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The reward services of a compose document."""
    return {name: s for name, s in document["services"].items() if name not in NOT_REWARDS}


def gpu_count(service: dict[str, Any]) -> int:
    """GPUs a service reserves."""
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return sum(d.get("count", 0) for d in devices if "gpu" in d.get("capabilities", []))


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` and `${VAR}` with the given variables."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: env.get(m.group(1)) or m.group(2) or "", text)


def test_both_files_pass_check_jsonschema_with_the_compose_specification(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("check-jsonschema")
    files = [str(REPO_ROOT / "compose.yaml"), str(GPU_OVERLAY)]
    command = [str(exe), "--builtin-schema", "vendor.compose-spec"]
    done = subprocess.run([*command, *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  trainer:\n    depends_on:\n      jpeg: {condition: when_ready}\n")
    bad = subprocess.run([*command, str(broken)], capture_output=True, text=True)
    assert bad.returncode == 1 and "when_ready" in bad.stdout


def test_a_bare_up_starts_the_cpu_rewards_and_the_trainer_of_the_default_preset(compose: dict[str, Any]) -> None:
    default = {name for name, s in compose["services"].items() if not s.get("profiles")}
    assert default == {"jpeg", "ocr", "geneval", "trainer"}
    assert all(gpu_count(compose["services"][name]) == 0 for name in default)
    trainer = compose["services"]["trainer"]
    command = [interpolate(word, {}) for word in trainer["command"]]
    assert command == ["rewardflow", "train", f"--preset={DEFAULT_PRESET}", f"--out=/runs/{DEFAULT_PRESET}"]
    assert interpolate(trainer["command"][2], {"REWARDFLOW_PRESET": "tiny_jpeg"}) == "--preset=tiny_jpeg"
    assert {"type": "volume", "source": "runs", "target": "/runs"} in trainer["volumes"]
    assert trainer["image"].endswith("-cpu") and trainer["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    geneval = environment(compose["services"]["geneval"])
    assert interpolate(geneval["REWARDFLOW_GENEVAL_DETECTOR"], {}) == "shapes"
    assert geneval["REWARDFLOW_DEVICE"] == "cpu"


def test_the_default_presets_rewards_are_in_the_default_stack(compose: dict[str, Any]) -> None:
    from rewardflow_trainer.presets import build_config

    default = [name for name, s in rewards(compose).items() if not s.get("profiles")]
    for preset in (DEFAULT_PRESET, "tiny_jpeg"):
        assert set(build_config(preset).reward.services(list(rewards(compose)))) <= set(default), preset


def test_the_trainer_waits_for_and_reaches_every_reward(compose: dict[str, Any]) -> None:
    trainer = compose["services"]["trainer"]
    env = environment(trainer)
    for name, service in rewards(compose).items():
        assert env.get(f"REWARDFLOW_ENDPOINT_{name.upper()}") == f"http://{name}:8000", name
        dependency = trainer["depends_on"].get(name)
        assert dependency is not None, f"trainer.depends_on: {name} missing"
        assert dependency["condition"] == "service_healthy"
        # A reward behind a profile is waited for only when its profile is on.
        assert dependency.get("required", True) is not bool(service.get("profiles")), name
    assert "REWARDFLOW_API_KEY" in env and env["REWARDFLOW_API_KEY"] is None  # passed through, never written here
    assert set(trainer["depends_on"]) == set(rewards(compose))


def test_the_gpu_overlay_adds_gpus_and_cuda_wheels_and_changes_nothing_else(
    compose: dict[str, Any], overlay: dict[str, Any], repo_root: Path
) -> None:
    assert schema_errors(overlay) == []
    assert set(overlay["services"]) <= set(compose["services"])
    gpu = merged(compose, overlay)
    assert schema_errors(gpu) == [] and rule_violations(gpu, repo_root) == []
    torch_builds = {
        n for n, s in compose["services"].items() if "TORCH_INDEX_URL" in s.get("build", {}).get("args", {})
    }
    assert torch_builds == set(overlay["services"]), "every torch image has a CUDA build in the overlay, and only those"
    for name in torch_builds:
        service, base = gpu["services"][name], compose["services"][name]
        assert gpu_count(base) == 0 and gpu_count(service) == 1, name
        assert service["build"]["args"]["TORCH_INDEX_URL"] == CUDA_INDEX
        assert service["image"] == base["image"].removesuffix("-cpu") != base["image"], name
        if name != "trainer":
            assert environment(service)["REWARDFLOW_DEVICE"] == "cuda"
            assert environment(service).keys() == environment(base).keys(), "the overlay only changes values"
    assert rewards(gpu)["jpeg"] == rewards(compose)["jpeg"]


def test_the_vlm_server_is_sglang_on_a_gpu_with_the_model_cache(compose: dict[str, Any]) -> None:
    sglang = compose["services"]["sglang"]
    assert "vlm" in sglang["profiles"] and gpu_count(sglang) == 1
    command = sglang["command"]
    assert command[:3] == ["python3", "-m", "sglang.launch_server"]
    assert command[command.index("--model-path") + 1] == "CodeGoat24/UnifiedReward-7b-v1.5"
    assert command[command.index("--chat-template") + 1] == "chatml-llava"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    assert sglang["ports"] == [f"{port}:{port}"] and f":{port}/health" in " ".join(sglang["healthcheck"]["test"])
    assert any(v.get("source") == "model-cache" and v.get("read_only") for v in sglang["volumes"])
    assert environment(sglang)["HF_HUB_OFFLINE"] == "1"


def variables(text: str) -> set[str]:
    """Every variable a compose file reads: `${NAME...}` interpolations and pass-through keys (`NAME:` alone)."""
    interpolated = set(re.findall(r"\$\{(\w+)", text))
    passed = set(re.findall(r"^\s+([A-Z][A-Z0-9_]*):\s*(?:#.*)?$", text, re.MULTILINE))
    return interpolated | passed


def test_env_example_names_every_variable_the_compose_files_read() -> None:
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    read = variables((REPO_ROOT / "compose.yaml").read_text()) | variables(GPU_OVERLAY.read_text())
    assert {"REWARDFLOW_PRESET", "REWARDFLOW_API_KEY", "REWARDFLOW_GENEVAL_DETECTOR"} <= read
    assert read - set(example) == set(), "variables missing from .env.example"
    assert example["REWARDFLOW_PRESET"] == DEFAULT_PRESET and example["REWARDFLOW_API_KEY"] == ""
    assert set(example) - read <= {"COMPOSE_PROFILES", "COMPOSE_FILE"}, "variables nothing reads"
