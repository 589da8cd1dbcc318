"""`accelerate launch tests/trainer/rank_endpoints.py ARGS...`: `rewardflow train ARGS...` where each rank has its own
reward endpoints, so that a test can take a service away from one rank only.

Every TEST_RANK<r>_<NAME>=value becomes <NAME>=value in the process of rank r (e.g. TEST_RANK1_REWARDFLOW_ENDPOINT_JPEG,
which the trainer reads as reward.endpoints.jpeg). With TEST_EXIT_DIR, each rank writes its exit code to
rank<r>.exit there before it exits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rewardflow_trainer.cli import main


def main_of_rank() -> int:
    rank = os.environ.get("RANK", "0")
    prefix = f"TEST_RANK{rank}_"
    for name, value in list(os.environ.items()):
        if name.startswith(prefix):
            os.environ[name[len(prefix) :]] = value
    code = main()
    if os.environ.get("TEST_EXIT_DIR"):
        (Path(os.environ["TEST_EXIT_DIR"]) / f"rank{rank}.exit").write_text(str(code))
    return code


if __name__ == "__main__":
    sys.exit(main_of_rank())
