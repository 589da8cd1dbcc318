"""`python -m rewardflow_kit NAME`: serve an installed reward service, configured by REWARDFLOW_* env vars.

NAME is a service name from the `rewardflow.scorers` entry points (`jpeg`, `ocr`, ...), or an ad-hoc
scorer class as `package.module:ClassName` (a value with ':' is a class). With no NAME,
$REWARDFLOW_SERVICE names it (what the service images set).
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from rewardflow_kit.registry import load_service, service_names
from rewardflow_kit.server import load_scorer, run
from rewardflow_kit.settings import ServiceSettings, settings_error_line

SERVICE_ENV = "REWARDFLOW_SERVICE"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rewardflow_kit",
        description="Serve a reward service or a scorer class; settings come from REWARDFLOW_* env vars.",
    )
    parser.add_argument(
        "name",
        nargs="?",
        help=f"service name ({', '.join(service_names()) or 'none installed'}) or 'package.module:ClassName'; "
        f"default: ${SERVICE_ENV}",
    )
    parser.add_argument("--host", help="overrides REWARDFLOW_HOST")
    parser.add_argument("--port", type=int, help="overrides REWARDFLOW_PORT")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    name = args.name or os.environ.get(SERVICE_ENV, "")
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        if not name:
            raise ValueError(f"no service given: pass NAME or set {SERVICE_ENV}")
        settings = ServiceSettings(**overrides)
        scorer = load_scorer(name) if ":" in name else load_service(name)
    except ValidationError as exc:
        print(f"error: {settings_error_line(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(scorer, settings)


if __name__ == "__main__":
    sys.exit(main())
