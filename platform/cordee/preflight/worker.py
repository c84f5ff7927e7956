"""One rank of a standalone preflight: `python -m cordee.preflight.worker`, started by
standalone.run_standalone with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT and
CORDEE_PREFLIGHT_WORKER (the collector's address and the options, JSON) in its environment.
Its exit code is the run's; what went wrong is reported through the collector."""

from __future__ import annotations

import json
import os
import sys

from cordee.errors import CordeeError, one_line
from cordee.process import exit_now


def main() -> int:
    from cordee.launch.launchenv import detect
    from cordee.preflight.runner import Options, make_plan, rank_main
    from cordee.preflight.standalone import WORKER_VAR

    spec = json.loads(os.environ[WORKER_VAR])
    opts = Options(**spec["options"])
    launch = detect(os.environ)
    plan = make_plan(opts, os.environ, launch.local_world_size)
    return rank_main(opts, plan, os.environ, launch, spec["host"], int(spec["port"]))


if __name__ == "__main__":
    try:
        code = main()
    except CordeeError as e:
        print(one_line(f"cordee preflight worker (rank {os.environ.get('RANK', '?')}): {e}"), file=sys.stderr)
        code = e.exit_code
    exit_now(code)  # no teardown: a broken process group can hang it; the run is over
