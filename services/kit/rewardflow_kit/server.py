"""Run a scorer under uvicorn (httptools + uvloop), from an object or a "module:Class" spec."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import uvicorn

from rewardflow_kit.app import create_app
from rewardflow_kit.scorer import Scorer
from rewardflow_kit.settings import ServiceSettings
from rewardflow_kit.stack import EXIT_LOAD_FAILED  # also what the stack recognises

_REQUIRED = ("name", "version", "model_id", "device", "score_keys", "score_range", "max_batch_size", "load", "score")


def load_scorer(spec: str) -> Scorer:
    """Import "package.module:ClassName" and instantiate it with no arguments."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"scorer spec {spec!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"scorer spec {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"scorer spec {spec!r}: module {module_name!r} has no attribute {class_name!r}")
    scorer = cls()
    missing = [attr for attr in _REQUIRED if not hasattr(scorer, attr)]
    if missing:
        raise ValueError(f"scorer spec {spec!r}: {class_name} lacks {', '.join(missing)} of the Scorer protocol")
    return scorer


def run(scorer: Scorer, settings: ServiceSettings | None = None) -> int:
    """Serve `scorer` on settings.host:settings.port until SIGINT/SIGTERM; returns the exit code: 0, or
    EXIT_LOAD_FAILED after printing one line when the model failed to load."""
    settings = settings if settings is not None else ServiceSettings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(scorer, settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            # uvloop is a dependency on Linux/macOS; the fallback only keeps `run` usable on Windows.
            loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            http="httptools",
            log_level=settings.log_level,
            access_log=settings.access_log,
            timeout_graceful_shutdown=5,
        )
    )
    state = app.state.rewardflow
    state.on_load_failure = lambda: setattr(server, "should_exit", True)
    server.run()
    if state.load_failure is not None and not settings.stay_up_on_load_error:
        # Last, after uvicorn's shutdown lines, so that the log's last line is the reason.
        print(state.load_failure, file=sys.stderr, flush=True)
        return EXIT_LOAD_FAILED
    return 0


def serve_spec(spec: str, settings: ServiceSettings | None = None) -> int:
    """Import, instantiate and serve the scorer class named by "module:Class"; returns the exit code."""
    return run(load_scorer(spec), settings)
