"""`make test` sets REWARDFLOW_FAIL_ON_SKIP=1: a skipped test fails the run, a gpu test without CUDA does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

SAMPLE = """
import pytest

def test_skips():
    pytest.skip("not here")

@pytest.mark.gpu
def test_needs_cuda():
    pass
"""


@pytest.mark.parametrize(("fail_on_skip", "failed"), [("1", True), ("0", False)])
def test_a_skip_fails_only_when_asked(tmp_path: Path, fail_on_skip: str, failed: bool) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {**os.environ, "REWARDFLOW_FAIL_ON_SKIP": fail_on_skip}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (run.returncode != 0) == failed, run.stdout
    assert ("1 failed" in run.stdout) == failed, run.stdout
    assert "2 failed" not in run.stdout, run.stdout  # the gpu test runs with CUDA, is skipped without: never fails


SKIP_INSIDE_GPU = """
import pytest

@pytest.mark.gpu
def test_needs_cuda_but_skips_for_another_reason():
    pytest.skip("a model file is missing")
"""


@pytest.mark.parametrize(("cuda", "failed"), [("present", True), ("absent", False)])
def test_a_skip_inside_a_gpu_test_is_silent_only_without_cuda(tmp_path: Path, cuda: str, failed: bool) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_sample.py").write_text(SKIP_INSIDE_GPU)
    # "present": the conftest is told CUDA exists by a stub torch module on the path, whatever this machine has.
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "torch.py").write_text("class cuda:\n    is_available = staticmethod(lambda: True)\n")
    env = {**os.environ, "REWARDFLOW_FAIL_ON_SKIP": "1"}
    if cuda == "present":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stub), env.get("PYTHONPATH")]))
    else:
        env["REWARDFLOW_PRETEND_NO_CUDA"] = "1"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_sample.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ("1 failed" in run.stdout) == failed, run.stdout
    assert ("1 skipped" in run.stdout) == (not failed), run.stdout
