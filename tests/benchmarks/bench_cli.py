"""Start-up cost of the commands that run on login nodes and in every task.

Target (issue 2): `cordee --help` and `cordee env show --json` under 3x `python -c pass`
measured in the same run, i.e. no torch/numpy import on these paths. Commands run round-robin;
the ratio is of medians. The package is byte-compiled first, as an installed package is (the
editable checkout may run with PYTHONDONTWRITEBYTECODE and would otherwise compile every time).
"""

import compileall
import os
import sys
from pathlib import Path

from common import print_table, time_commands, write_result

import cordee

TARGET_RATIO = 3.0
compileall.compile_dir(os.path.dirname(cordee.__file__), quiet=1)
cordee_bin = str(Path(sys.executable).with_name("cordee"))
env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
cases = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "cordee --help": [cordee_bin, "--help"],
    "cordee env show --json": [cordee_bin, "env", "show", "--json"],
    "cordee hostlist expand": [cordee_bin, "hostlist", "expand", "nid[000001-004096]"],
}
results = time_commands(cases, rounds=30, env=env)
base = results["python -c pass"]["median_s"]
rows = []
for name, r in results.items():
    r["ratio_to_python"] = r["median_s"] / base
    r["within_target"] = name == "python -c pass" or r["ratio_to_python"] < TARGET_RATIO
    rows.append(
        (
            name,
            f"{r['median_s'] * 1e3:.1f} ms",
            f"{r['min_s'] * 1e3:.1f} ms",
            f"{r['ratio_to_python']:.2f}x",
            "ok" if r["within_target"] else f"OVER {TARGET_RATIO}x",
        )
    )
print_table(
    "CLI start-up (30 rounds, round-robin)",
    rows,
    ("command", "median", "min", "vs python (median)", f"target <{TARGET_RATIO:g}x"),
)
out = write_result("cli_startup", {"target_ratio": TARGET_RATIO, "cases": results})
print(f"wrote {out}")
