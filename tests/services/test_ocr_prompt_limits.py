"""Hostile prompts for the OCR service (issue 17): the longest allowed prompts never stall the event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from raw_http import assert_responsive, healthz_ms
from rewardflow_proto import Limits, ScoreRequest, decode_response, encode_request
from service_calls import error_of, post

pytestmark = pytest.mark.slow

MAX_PROMPT_CHARS = Limits().max_prompt_chars


@pytest.fixture(scope="module")
def ocr_url(module_service_process: Callable) -> str:
    return module_service_process("ocr", timeout_s=120).url


def test_healthz_stays_fast_while_32_unclosed_quote_prompts_are_parsed(ocr_url: str) -> None:
    n = 32
    prompts = ["\u201c" * MAX_PROMPT_CHARS] * n  # an opening quote that never closes, as long as the contract allows
    images = [np.full((32, 32, 3), 255, np.uint8)] * n
    body = encode_request(ScoreRequest(images=images, prompts=prompts, metadata=[{"target_text": "abc"}] * n))
    replies: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: replies.append(post(ocr_url, body)))
    latencies: list[float] = []
    with httpx.Client() as client:
        healthz_ms(client, ocr_url)  # connect first: only the answer is timed below
        sender.start()
        while sender.is_alive() and len(latencies) < 2000:
            latencies.append(healthz_ms(client, ocr_url))
    sender.join(timeout=120)
    assert replies and replies[0].status_code == 200, replies[0].content[:300] if replies else "no reply"
    response = decode_response(replies[0].content)
    assert [d["target"] for d in response.details] == ["abc"] * n  # type: ignore[union-attr]
    assert_responsive(latencies, f"parsing {n} prompts of {MAX_PROMPT_CHARS} unclosed quotes")


def test_a_prompt_over_max_prompt_chars_is_422_naming_the_limit(ocr_url: str) -> None:
    request = ScoreRequest(images=[np.zeros((8, 8, 3), np.uint8)], prompts=['"a"' + "x" * MAX_PROMPT_CHARS])
    reply = post(ocr_url, encode_request(request))
    assert reply.status_code == 422
    error = error_of(reply)
    assert error["field"] == "prompts[0]" and str(MAX_PROMPT_CHARS) in error["message"], error
    assert httpx.get(ocr_url + "/v1/info").json()["max_prompt_chars"] == MAX_PROMPT_CHARS
