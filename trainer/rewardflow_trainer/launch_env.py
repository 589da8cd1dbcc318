"""What the launcher says through the environment: this process's place in the run, and the reward services.

torchrun (also under `accelerate launch`, the Kubeflow Trainer's torch runtime and the chart's JobSet) sets
RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every process, and accelerate reads them as
they are. A launcher that starts one process per node without torchrun (an Indexed Job, a PyTorchJob-style
operator, a script per node) gives WORLD_SIZE, MASTER_ADDR/MASTER_PORT and the node's index only (RANK,
NODE_RANK, or the Job controller's JOB_COMPLETION_INDEX). Without LOCAL_RANK, accelerate would train on every
node alone (on CUDA) or make every node rank 0 (on a CPU): `process_env` fills in what is missing.

Compose and the chart pass the reward services the same way: REWARDFLOW_ENDPOINT_<SERVICE>=url[,url...] and
REWARDFLOW_API_KEY (the variable the services read) become reward.endpoints.<service> and reward.api_key,
below any override given on the command line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping

from rewardflow_trainer.config import ConfigError

NODE_INDEX_VARIABLES = ("RANK", "NODE_RANK", "JOB_COMPLETION_INDEX")
"""Where a one-process-per-node launcher puts the node's index, in the order they are read."""
ENDPOINT_PREFIX = "REWARDFLOW_ENDPOINT_"
API_KEY_VARIABLE = "REWARDFLOW_API_KEY"


def _integer(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"{name}={env[name]!r}: expected an integer (set by the launcher)") from None


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add so that accelerate joins the run the launcher describes ({} when none are missing)."""
    world_size = _integer(env, "WORLD_SIZE") if env.get("WORLD_SIZE") else 1
    if world_size <= 1 or env.get("LOCAL_RANK"):
        return {}
    if env.get("LOCAL_WORLD_SIZE", "1") != "1":
        raise ConfigError(
            f"LOCAL_WORLD_SIZE={env['LOCAL_WORLD_SIZE']} without LOCAL_RANK: several processes per node need a "
            "launcher that numbers them (torchrun --nproc-per-node)"
        )
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world_size} but {' and '.join(missing)} unset: expected the address of rank 0 "
            "(torchrun and the job controllers set MASTER_ADDR and MASTER_PORT)"
        )
    source = next((name for name in NODE_INDEX_VARIABLES if env.get(name)), None)
    if source is None:
        raise ConfigError(
            f"WORLD_SIZE={world_size} but none of {', '.join(NODE_INDEX_VARIABLES)} is set: expected this node's "
            "index (an Indexed Job sets JOB_COMPLETION_INDEX)"
        )
    rank = _integer(env, source)
    if not 0 <= rank < world_size:
        raise ConfigError(f"{source}={rank}: expected 0 <= {source} < WORLD_SIZE={world_size}")
    return {"RANK": str(rank), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}


def complete_process_env(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Add `process_env`'s variables to the environment (before the Accelerator is made); returns them."""
    added = process_env(environ)
    environ.update(added)
    return added


def reward_overrides(env: Mapping[str, str]) -> list[str]:
    """`key=value` overrides for reward.endpoints and reward.api_key from the environment (values as JSON)."""
    overrides = []
    for name, value in sorted(env.items()):
        if name.startswith(ENDPOINT_PREFIX) and value.strip():
            urls = [url.strip() for url in value.split(",") if url.strip()]
            overrides.append(f"reward.endpoints.{name[len(ENDPOINT_PREFIX) :].lower()}={json.dumps(urls)}")
    if env.get(API_KEY_VARIABLE):
        overrides.append(f"reward.api_key={json.dumps(env[API_KEY_VARIABLE])}")
    return overrides
