"""What a check's run function gets (who and where this rank is, the system profile, the device,
room for the lazily created process groups), and run_check, which runs one check on it.

No torch here (the quick level and `cordee launch --preflight quick` import this module): the
torch checks create their process groups on first use (checks_torch) and keep them in `cache`.
Nothing tears them down: a rank ends its process right after the run (os._exit)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cordee.errors import CordeeError, one_line
from cordee.launch.launchenv import LaunchEnv
from cordee.preflight.results import DETAIL_MAX, Check, Result

# How much more work the long level does than the standard one (sweep iterations, timed repeats).
LONG_FACTOR = 5


@dataclass
class Context:
    environ: Mapping[str, str]
    launch: LaunchEnv
    node: str  # this host's name, as results name it
    level: str  # "quick" | "standard" | "long"
    profile: Any  # systems.SystemProfile
    device: str = "cpu"  # "cpu" | "cuda"
    backend: str = "gloo"  # "gloo" | "nccl"
    pg_timeout_s: float = 60.0  # torch collectives give up after this (the collector acts sooner)
    own_pids: tuple[int, ...] = ()  # this job's processes on this node (not "foreign" on a GPU)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def local_rank(self) -> int:
        return self.launch.local_rank

    @property
    def local_world_size(self) -> int:
        return self.launch.local_world_size

    @property
    def node_rank(self) -> int:
        return self.launch.node_rank

    @property
    def nnodes(self) -> int:
        return self.launch.nnodes

    @property
    def scale(self) -> int:
        """Repeats and iterations multiply by this on the long level."""
        return LONG_FACTOR if self.level == "long" else 1


def run_check(check: Check, ctx: Context) -> list[Result]:
    """The check's results, with this rank and node filled in where the scope says so; an
    exception becomes an error result (the run goes on: the collector decides when to stop)."""
    started = time.monotonic()
    try:
        got = list(check.run(ctx))
    except Exception as e:  # noqa: BLE001 - any failure of a check is a result, named
        text = one_line(f"{type(e).__name__}: {e}" if not isinstance(e, CordeeError) else str(e))
        got = [Result(check.name, "error", detail=text[:DETAIL_MAX])]
    elapsed = time.monotonic() - started
    out = []
    for r in got:
        node = r.node or (ctx.node if check.scope in ("rank", "node") else "")
        rank = r.rank if r.rank is not None or check.scope != "rank" else ctx.rank
        if r.status == "error" and r.rank is None and check.scope == "job":
            node, rank = node or ctx.node, ctx.rank  # which rank failed matters for a job check
        out.append(dataclasses.replace(r, node=node, rank=rank, duration_s=r.duration_s or elapsed))
    return out
