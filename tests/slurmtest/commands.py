"""Commands: the tools the cluster needs, host commands (ip, scancel) run with a timeout, and
the environment that Slurm client commands (srun, sinfo, scontrol) get."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CMD_TIMEOUT = 15.0
# Variables of an enclosing job or launcher that would leak into the test cluster's steps.
FOREIGN_PREFIXES = ("SLURM_", "SRUN_", "SALLOC_", "SBATCH_", "PMI_", "PMIX_", "TORCHELASTIC_")
FOREIGN_VARS = set(
    "RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE NODE_RANK GROUP_RANK MASTER_ADDR MASTER_PORT".split()
)
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
TOOLS = ("munged", "slurmctld", "slurmd", "srun", "sinfo", "scontrol", "scancel", "nsenter", "unshare", "ip")


class ClusterError(RuntimeError):
    """The cluster could not be started (the message carries the relevant daemon log tail)."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster, or None if it can."""
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root (network namespaces, slurmd)"
    missing = [t for t in TOOLS if shutil.which(t, path=_sbin_path()) is None]
    if missing:
        return f"missing {', '.join(missing)}: run scripts/install-system-deps.sh"
    return None


def _sbin_path() -> str:
    return os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin"


def run(argv: list[str], timeout: float = CMD_TIMEOUT, check: bool = True, env=None):
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"{' '.join(argv)}: no answer after {timeout}s") from e
    if check and p.returncode != 0:
        raise ClusterError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def client_env(conf_path: Path) -> dict[str, str]:
    """This process's environment for Slurm client commands against the cluster of `conf_path`:
    without an enclosing job's variables, with the venv on PATH and SLURM_CONF set."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES) and k not in FOREIGN_VARS
    }
    path = env.get("PATH", "/usr/bin:/bin").split(":")
    bindir = str(VENV_BIN if VENV_BIN.is_dir() else Path(sys.executable).parent)
    if bindir not in path:  # the nodes run the venv's python and `cordee`
        path.insert(0, bindir)
    env["PATH"] = ":".join(path)
    env["SLURM_CONF"] = str(conf_path)
    return env
