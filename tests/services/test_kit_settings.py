"""ServiceSettings: every field is an env var, documented, and in the kit's settings table."""

from __future__ import annotations

import re

import pytest
import rewardflow_kit
from pydantic import ValidationError
from rewardflow_kit import ServiceSettings


def test_every_setting_has_a_description_and_a_row_in_the_kit_docs() -> None:
    documented = set(re.findall(r"^\| `(REWARDFLOW_[A-Z_]+)` \|", rewardflow_kit.__doc__ or "", re.MULTILINE))
    fields = {f"REWARDFLOW_{name.upper()}" for name in ServiceSettings.model_fields}
    assert documented == fields
    assert all(f.description for f in ServiceSettings.model_fields.values())


def test_settings_come_from_prefixed_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDFLOW_PORT", "8123")
    monkeypatch.setenv("REWARDFLOW_MAX_QUEUE_DELAY_MS", "2.5")
    monkeypatch.setenv("REWARDFLOW_API_KEY", "zq-secret-9")
    monkeypatch.setenv("REWARDFLOW_STACK_FILE", "/tmp/not-a-service-setting.json")  # other tools' vars are ignored
    settings = ServiceSettings()
    assert (settings.port, settings.max_queue_delay_ms, settings.max_batch_size) == (8123, 2.5, None)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "zq-secret-9"
    assert "zq-secret-9" not in repr(settings)  # the key never lands in logs


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDFLOW_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="max_batch_size"):
        ServiceSettings()
