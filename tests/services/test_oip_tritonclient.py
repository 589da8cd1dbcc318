"""The real `tritonclient[http]` against the jpeg service: server and model metadata, readiness, configuration,
`infer` (binary tensors, the client's default, and JSON data) scoring as /v1/score does, and OIP errors it decodes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tritonclient.http as triton
from rewardflow_proto import ScoreRequest
from service_calls import random_images, score
from tritonclient.utils import InferenceServerException

STARTUP_S = 180.0  # a service's start-up (imports) can take minutes on a loaded 2-core machine

SCORE_KEYS = ("compressibility", "incompressibility", "size_kb")


@pytest.fixture(scope="module")
def service_url(module_service_process: Callable) -> str:
    return module_service_process("jpeg", timeout_s=STARTUP_S).url


@pytest.fixture
def client(service_url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(service_url.removeprefix("http://"))


def inputs(images: np.ndarray, prompts: list[str], binary: bool = True) -> list[triton.InferInput]:
    image_input = triton.InferInput("images", list(images.shape), "UINT8")
    image_input.set_data_from_numpy(images, binary_data=binary)
    prompt_input = triton.InferInput("prompts", [len(prompts)], "BYTES")
    prompt_input.set_data_from_numpy(np.array(prompts, dtype=object), binary_data=binary)
    return [image_input, prompt_input]


def test_server_and_model_metadata_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("jpeg")
    assert client.is_model_ready("jpeg", model_version="1.0.0")
    server = client.get_server_metadata()
    assert server["name"] == "rewardflow" and "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata("jpeg")
    assert model["name"] == "jpeg" and model["versions"] == ["1.0.0"]
    assert [o["name"] for o in model["outputs"]] == [*SCORE_KEYS, "errors", "details"]
    config = client.get_model_config("jpeg")
    assert config["name"] == "jpeg" and config["max_batch_size"] == 256
    assert [t["data_type"] for t in config["input"]] == ["TYPE_UINT8", "TYPE_STRING", "TYPE_STRING"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_scores_equal_v1_score(client: triton.InferenceServerClient, service_url: str, binary: bool) -> None:
    images = random_images(4, 24, 20, seed=11)
    prompts = ["a cat", "ein Café", "", "a dog"]
    requested = [triton.InferRequestedOutput(name, binary_data=binary) for name in (*SCORE_KEYS, "errors")]
    result = client.infer("jpeg", inputs(images, prompts, binary), outputs=requested, request_id="t-1")
    expected = score(service_url, ScoreRequest(images=images, prompts=prompts))
    for key in SCORE_KEYS:
        scores = result.as_numpy(key)
        assert scores.dtype == np.float64 and scores.shape == (4,)
        assert scores.tolist() == expected.scores[key], key
    no_errors = [b""] * 4 if binary else [""] * 4  # BYTES: bytes from binary data, str from JSON
    assert result.as_numpy("errors").tolist() == no_errors
    assert result.get_response()["id"] == "t-1"


def test_infer_with_the_default_outputs(client: triton.InferenceServerClient, service_url: str) -> None:
    images = random_images(2, 16, 16, seed=12)
    result = client.infer("jpeg", inputs(images, ["x", "y"]))
    expected = score(service_url, ScoreRequest(images=images, prompts=["x", "y"]))
    assert result.as_numpy("compressibility").tolist() == expected.scores["compressibility"]
    assert result.as_numpy("details").tolist() == [b"", b""]


def test_a_bad_input_is_an_error_the_client_decodes(client: triton.InferenceServerClient) -> None:
    images = random_images(3, 8, 8)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("jpeg", inputs(images, ["only", "two"]))
    assert raised.value.status() == "422"
    assert raised.value.message() == "images: has 3 images but there are 2 prompts; give one prompt per image"
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("pickscore")
    assert raised.value.status() == "404" and "'pickscore'" in raised.value.message()
    with pytest.raises(InferenceServerException) as raised:
        client.infer("jpeg", [inputs(images, ["a", "b", "c"])[1]])
    assert "required input 'images'" in raised.value.message()
