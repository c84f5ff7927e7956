"""The test process's environment without the variables of a launch around it (a Slurm step,
torchrun, `cordee launch`), so that a child `cordee launch` or rank sees a plain local run."""

from __future__ import annotations

import os

LAUNCH_PREFIXES = ("SLURM_", "TORCHELASTIC", "MASTER_", "CORDEE_")
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def clean_env(
    *, prefixes: tuple[str, ...] = (), names: tuple[str, ...] = (), path: str | None = None, **extra: str
) -> dict[str, str]:
    """os.environ without the launch variables (and those starting with `prefixes` or named in
    `names`); `path` first on PYTHONPATH; then `extra` on top."""
    drop_prefixes, drop = LAUNCH_PREFIXES + prefixes, LAUNCH_VARS + names
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes) and k not in drop}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    return {**env, **extra}
