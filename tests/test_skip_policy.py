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
