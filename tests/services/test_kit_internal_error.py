"""An unexpected exception inside the kit becomes a 500 `internal` error body, logged with its traceback."""

from __future__ import annotations

import logging
import time

import pytest
from fastapi.testclient import TestClient
from rewardflow_jpeg import JpegScorer
from rewardflow_kit import ServiceSettings, create_app
from rewardflow_proto import ScoreRequest, decode_error, encode_request
from service_calls import MSGPACK, random_images


def test_unexpected_exception_is_500_internal_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # In-process on purpose: a real process cannot be made to hit a kit bug on demand.
    app = create_app(JpegScorer(), ServiceSettings())
    body = encode_request(ScoreRequest(images=random_images(1), prompts=["p"]))
    with TestClient(app) as client:
        state = app.state.rewardflow
        for _ in range(200):
            if state.ready:
                break
            time.sleep(0.01)
        assert client.get("/readyz").status_code == 200

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("kit bug")

        monkeypatch.setattr(state.batcher, "submit", broken)
        with caplog.at_level(logging.ERROR, logger="rewardflow_kit"):
            reply = client.post("/v1/score", content=body, headers={"content-type": MSGPACK})
        assert reply.status_code == 500
        assert decode_error(reply.content).code == "internal"
        assert any(r.exc_info and "kit bug" in str(r.exc_info[1]) for r in caplog.records)
        assert 'code="500"' in client.get("/metrics").text
