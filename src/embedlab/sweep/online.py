"""An online sweep: wandb's ``sweep`` and ``agent``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from embedlab.sweep.spec import DEFAULT_COMMAND


# -- online --------------------------------------------------------------------------------
def wandb_command(config: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """The command wandb's agent runs: the sweep's, then ``overrides``."""
    return [str(c) for c in config.get("command", DEFAULT_COMMAND)] + list(overrides)


def run_online(
    config: dict[str, Any],
    overrides: Sequence[str],
    count: int | None,
    project: str | None,
    entity: str | None,
) -> int:
    """Create the sweep on wandb's server and run an agent on this machine."""
    import wandb

    sweep = {**config, "command": wandb_command(config, overrides)}
    project = project or os.environ.get("WANDB_PROJECT", "embedlab")
    sweep_id = wandb.sweep(sweep, project=project, entity=entity)
    print(f"embedlab sweep: created wandb sweep {sweep_id} (project {project})")
    os.environ["EMBEDLAB_WANDB"] = "online"
    wandb.agent(sweep_id, project=project, entity=entity, count=count)
    return 0
