"""Start-up cost of the commands that run on login nodes and in every task.

Budget: `cordee --help` and `cordee env show --json` under 5x `python -c pass` measured in the
same run (importing click is most of it), and none of torch, Jinja2, PyYAML imported on these
paths (checked with `python -X importtime`). Commands run round-robin; the ratio is of medians.
The package is byte-compiled first, as an installed package is (the editable checkout may run
with PYTHONDONTWRITEBYTECODE and would otherwise compile every time).
"""

import compileall
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from common import print_table, time_commands, write_result

import cordee

TARGET_RATIO = 5.0
BUDGETED = ("cordee --help", "cordee env show --json")
HEAVY = ("torch", "jinja2", "yaml")
compileall.compile_dir(os.path.dirname(cordee.__file__), quiet=1)
cordee_bin = str(Path(sys.executable).with_name("cordee"))
env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
cases = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "cordee --help": [cordee_bin, "--help"],
    "cordee env show --json": [cordee_bin, "env", "show", "--json"],
    "cordee hostlist expand": [cordee_bin, "hostlist", "expand", "nid[000001-004096]"],
}


def heavy_imports(argv: list[str]) -> list[str]:
    """Packages among HEAVY that `python ARGV` imports (-X importtime lists every import)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env, timeout=60
    )
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in run.stderr.splitlines() if "|" in line}
    return sorted(names & set(HEAVY))


results = time_commands(cases, rounds=30, env=env)
base = results["python -c pass"]["median_s"]
rows = []
for name, r in results.items():
    r["ratio_to_python"] = r["median_s"] / base
    argv = cases[name]
    r["heavy_imports"] = heavy_imports(argv[1:] if argv[0] == sys.executable else argv)
    r["within_target"] = name not in BUDGETED or (
        r["ratio_to_python"] < TARGET_RATIO and not r["heavy_imports"]
    )
    budget = f"<{TARGET_RATIO:g}x, no {'/'.join(HEAVY)}" if name in BUDGETED else "-"
    rows.append(
        (
            name,
            f"{r['median_s'] * 1e3:.1f} ms",
            f"{r['min_s'] * 1e3:.1f} ms",
            f"{r['ratio_to_python']:.2f}x",
            ", ".join(r["heavy_imports"]) or "none",
            budget,
            "ok" if r["within_target"] else "OVER",
        )
    )
print_table(
    "CLI start-up (30 rounds, round-robin)",
    rows,
    ("command", "median", "min", "vs python (median)", "heavy imports", "budget", "verdict"),
)
out = write_result(
    "cli_startup",
    {"target_ratio": TARGET_RATIO, "budgeted": list(BUDGETED), "heavy": list(HEAVY), "cases": results},
    extra_versions={"click": importlib.metadata.version("click")},
)
print(f"wrote {out}")
