"""The served backend: each query is one OpenAI-compatible chat-completions request (sglang, vLLM, ...).

Images travel as PNG data URLs in `image_url` parts, before the text, in one user turn; `temperature` is 0.
At most `concurrency` requests are in flight; each has a connect and a read timeout, and is retried by tenacity
(exponential back-off) on transport errors, 429 and 5xx. A query that still fails gets a JudgeFailure in its slot:
the other queries of the batch keep their answers and the service stays up.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from rewardflow_vlm.query import JudgeFailure, JudgeQuery, png_data_url, to_pil
from rewardflow_vlm.settings import VLMSettings

log = logging.getLogger("rewardflow.vlm")

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class ServerError(Exception):
    """The server answered with an HTTP error status (kept apart from transport errors for the message)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def is_retryable(exc: BaseException) -> bool:
    """Transport errors (refused, reset, timed out) and 408/429/5xx are worth another try; 4xx are not."""
    if isinstance(exc, ServerError):
        return exc.status in RETRY_STATUS
    return isinstance(exc, httpx.TransportError)


def chat_body(query: JudgeQuery, model: str, max_tokens: int | None = None) -> dict[str, Any]:
    """The chat-completions request body for one query (greedy decoding, as the references ask)."""
    if query.answer_prefix:
        raise ValueError("answer_prefix is not supported by the served backend (it needs the model's logits)")
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": png_data_url(to_pil(image, query.resize_to))}}
        for image in query.images
    ]
    parts.append({"type": "text", "text": query.text})
    return {
        "model": model,
        "messages": [{"role": "user", "content": parts}],
        "temperature": 0,
        "max_tokens": max_tokens or query.max_new_tokens,
    }


def answer_text(reply: dict[str, Any]) -> str:
    """choices[0].message.content of a chat-completions reply; JudgeFailure when the reply has none."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeFailure("judge_error", f"reply without choices[0].message.content: {str(reply)[:300]}") from None
    if not isinstance(content, str):
        raise JudgeFailure("judge_error", f"choices[0].message.content is {type(content).__name__}, expected text")
    return content


class ServedVLM:
    """A client of one OpenAI-compatible server, safe to call from the kit's model thread."""

    kind = "served"

    def __init__(self, settings: VLMSettings, model: str) -> None:
        self.settings = settings
        self.model = settings.served_model or model
        self.base_url = settings.url.rstrip("/")
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency),
        )
        self.pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="vlm-served")

    def load(self) -> None:
        """Wait (up to REWARDFLOW_VLM_WAIT_READY_S) until GET /models answers and lists the served model."""
        retrying = Retrying(
            stop=stop_after_delay(self.settings.wait_ready_s),
            wait=wait_exponential(multiplier=0.5, max=5.0),
            retry=retry_if_exception(lambda exc: isinstance(exc, (httpx.TransportError, ServerError))),
            reraise=True,
        )
        try:
            models = retrying(self._listed_models)
        except (httpx.TransportError, ServerError) as exc:
            raise ConnectionError(
                f"REWARDFLOW_VLM_URL={self.base_url!r}: no OpenAI-compatible server answered GET /models within "
                f"REWARDFLOW_VLM_WAIT_READY_S={self.settings.wait_ready_s:g} s ({type(exc).__name__}: {exc})"
            ) from exc
        if self.model not in models:
            raise ValueError(
                f"REWARDFLOW_VLM_SERVED_MODEL={self.model!r} is not served at {self.base_url}; it serves {models}"
            )

    def _listed_models(self) -> list[str]:
        response = self.client.get("/models")
        if response.status_code != 200:
            raise ServerError(response.status_code, response.text)
        return [entry.get("id") for entry in response.json().get("data", [])]

    def answer(self, queries: list[JudgeQuery]) -> list[str | JudgeFailure]:
        """Each query's answer text, or its JudgeFailure, in order; at most `concurrency` requests at once."""
        return list(self.pool.map(self._answer_one, queries))

    def _answer_one(self, query: JudgeQuery) -> str | JudgeFailure:
        body = chat_body(query, self.model, self.settings.max_new_tokens)
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.attempts),
            wait=wait_exponential(multiplier=self.settings.backoff_s, max=10.0),
            retry=retry_if_exception(is_retryable),
        )
        try:
            return answer_text(retrying(self._post, body))
        except JudgeFailure as failure:
            return failure
        except RetryError as exc:
            return failure_of(exc.last_attempt.exception(), self.settings.attempts)
        except (httpx.HTTPError, ServerError, ValueError) as exc:
            return failure_of(exc, 1)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/chat/completions", json=body)
        if response.status_code != 200:
            raise ServerError(response.status_code, response.text)
        try:
            return response.json()
        except ValueError:
            raise JudgeFailure("judge_error", f"reply is not JSON: {response.text[:300]}") from None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def failure_of(exc: BaseException | None, tries: int) -> JudgeFailure:
    """The JudgeFailure a client sees for the last error of a query, with the number of tries."""
    after = f" after {tries} tries" if tries > 1 else ""
    if isinstance(exc, httpx.TimeoutException):
        return JudgeFailure("judge_timeout", f"the VLM server did not answer in time{after} ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return JudgeFailure("judge_unavailable", f"cannot reach the VLM server{after}: {type(exc).__name__}: {exc}")
    return JudgeFailure("judge_error", f"the VLM server refused the query{after}: {exc}")
