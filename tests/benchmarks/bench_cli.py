"""Start-up cost of the commands that run on login nodes and in every task.

Target (issue 2): `cordee --help` and `cordee env show --json` under 3x `python -c pass`
measured in the same run, i.e. no torch/numpy import on these paths."""

import os
import sys
from pathlib import Path

from common import print_table, time_command, write_result

TARGET_RATIO = 3.0
cordee = str(Path(sys.executable).with_name("cordee"))
env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
cases = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "cordee --help": [cordee, "--help"],
    "cordee env show --json": [cordee, "env", "show", "--json"],
    "cordee hostlist expand": [cordee, "hostlist", "expand", "nid[000001-004096]"],
}
results = {name: time_command(argv, repeats=20, env=env) for name, argv in cases.items()}
base = results["python -c pass"]["median_s"]
rows = []
for name, r in results.items():
    r["ratio_to_python"] = r["median_s"] / base
    r["within_target"] = name == "python -c pass" or r["ratio_to_python"] < TARGET_RATIO
    rows.append(
        (
            name,
            f"{r['median_s'] * 1e3:.1f} ms",
            f"{r['ratio_to_python']:.2f}x",
            "ok" if r["within_target"] else f"OVER {TARGET_RATIO}x",
        )
    )
print_table("CLI start-up (median of 20 runs)", rows, ("command", "median", "vs python", "target <3x"))
import click  # noqa: E402

out = write_result(
    "cli_startup", {"target_ratio": TARGET_RATIO, "cases": results}, {"click": click.__version__}
)
print(f"wrote {out}")
