"""The trainer takes its rank and its reward services from the launcher's environment (compose, k8s, torchrun)."""

from __future__ import annotations

import pytest
from rewardflow_trainer.cli import _parser, build_run_config
from rewardflow_trainer.config import ConfigError
from rewardflow_trainer.launch_env import complete_process_env, process_env, reward_overrides

RENDEZVOUS = {"MASTER_ADDR": "trainer-node-0-0.trainer", "MASTER_PORT": "29500"}


def test_a_laptop_run_and_torchrun_need_nothing_added() -> None:
    assert process_env({}) == {}
    assert process_env({"WORLD_SIZE": "1"}) == {}
    torchrun = {**RENDEZVOUS, "WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert process_env(torchrun) == {}


@pytest.mark.parametrize("index_variable", ["JOB_COMPLETION_INDEX", "NODE_RANK", "RANK"])
def test_one_process_per_node_gets_its_rank_from_the_node_index(index_variable: str) -> None:
    env = {**RENDEZVOUS, "WORLD_SIZE": "3", index_variable: "2"}
    assert process_env(env) == {"RANK": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}


def test_rank_outranks_node_rank_and_the_completion_index() -> None:
    env = {**RENDEZVOUS, "WORLD_SIZE": "2", "RANK": "1", "NODE_RANK": "0", "JOB_COMPLETION_INDEX": "0"}
    assert process_env(env)["RANK"] == "1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "2", "JOB_COMPLETION_INDEX": "1"}, "MASTER_ADDR and MASTER_PORT unset"),
        ({"WORLD_SIZE": "2", "MASTER_ADDR": "a", "JOB_COMPLETION_INDEX": "1"}, "but MASTER_PORT unset"),
        ({**RENDEZVOUS, "WORLD_SIZE": "2"}, "none of RANK, NODE_RANK, JOB_COMPLETION_INDEX is set"),
        ({**RENDEZVOUS, "WORLD_SIZE": "2", "NODE_RANK": "2"}, "NODE_RANK=2: expected 0 <= NODE_RANK < WORLD_SIZE=2"),
        ({**RENDEZVOUS, "WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two': expected an integer"),
        ({**RENDEZVOUS, "WORLD_SIZE": "4", "RANK": "0", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_WORLD_SIZE=2 without LOCAL"),
    ],
)
def test_an_incomplete_launcher_environment_is_one_line_naming_the_variable(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        process_env(env)


def test_complete_process_env_writes_the_missing_variables() -> None:
    environ = {**RENDEZVOUS, "WORLD_SIZE": "2", "JOB_COMPLETION_INDEX": "1"}
    assert complete_process_env(environ) == {"RANK": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    assert environ["RANK"] == "1" and environ["LOCAL_RANK"] == "0"
    assert complete_process_env(environ) == {}  # now it reads as a torchrun process


def test_reward_urls_and_the_api_key_come_from_the_environment() -> None:
    env = {
        "REWARDFLOW_ENDPOINT_GENEVAL": "http://geneval:8000",
        "REWARDFLOW_ENDPOINT_JPEG": "http://jpeg-0:8000, http://jpeg-1:8000",
        "REWARDFLOW_ENDPOINT_OCR": "",  # compose's ${VAR:-}: not set
        "REWARDFLOW_API_KEY": "s3cret: 1",
    }
    assert reward_overrides(env) == [
        'reward.endpoints.geneval=["http://geneval:8000"]',
        'reward.endpoints.jpeg=["http://jpeg-0:8000", "http://jpeg-1:8000"]',
        'reward.api_key="s3cret: 1"',
    ]


def test_the_command_line_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDFLOW_ENDPOINT_JPEG", "http://jpeg:8000,http://jpeg-b:8000")
    monkeypatch.setenv("REWARDFLOW_ENDPOINT_GENEVAL", "http://geneval:8000")
    monkeypatch.setenv("REWARDFLOW_API_KEY", "12345")  # digits stay a string
    config = build_run_config(_parser().parse_args(["--preset", "tiny_jpeg", "--show-config"]))
    assert config.reward.endpoints == {
        "geneval": ["http://geneval:8000"],
        "jpeg": ["http://jpeg:8000", "http://jpeg-b:8000"],
    }
    assert config.reward.api_key == "12345"
    args = _parser().parse_args(["--show-config", "reward.endpoints.jpeg=http://other:1", "reward.api_key=k2"])
    config = build_run_config(args)
    assert config.reward.endpoints["jpeg"] == ["http://other:1"] and config.reward.api_key == "k2"


def test_an_endpoint_variable_that_is_not_a_url_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDFLOW_ENDPOINT_JPEG", "jpeg:8000")
    with pytest.raises(ConfigError, match=r"reward\.endpoints\.jpeg = \['jpeg:8000'\]: expected .*http"):
        build_run_config(_parser().parse_args(["--preset", "tiny_jpeg", "--show-config"]))
