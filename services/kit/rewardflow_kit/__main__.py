"""`python -m rewardflow_kit package.module:ClassName`: serve any scorer class, configured by REWARDFLOW_* env vars."""

from __future__ import annotations

import argparse
import sys

from rewardflow_kit.server import load_scorer, run
from rewardflow_kit.settings import ServiceSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rewardflow_kit",
        description="Serve a scorer class (instantiated with no arguments); settings come from REWARDFLOW_* env vars.",
    )
    parser.add_argument("spec", help="the scorer class as 'package.module:ClassName'")
    parser.add_argument("--host", help="overrides REWARDFLOW_HOST")
    parser.add_argument("--port", type=int, help="overrides REWARDFLOW_PORT")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = ServiceSettings(**overrides)
        scorer = load_scorer(args.spec)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run(scorer, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
