"""Wall time of `cordee net show --json` as a ratio to `python -c pass` (issue 4).

net show loads libnccl, the net plugin and libfabric in three child processes that run side by
side, so its floor is about two Python start-ups plus the slowest child (libfabric's provider
discovery). The plugin case uses a real net plugin compiled from the test sources (ABI v10), so
the probe does real work. Commands run round-robin; the ratio is of medians.
"""

import compileall
import os
import sys
import tempfile
from pathlib import Path

from common import print_table, time_commands, write_result

import cordee

ROOT = Path(__file__).resolve().parents[2]
compileall.compile_dir(os.path.dirname(cordee.__file__), quiet=1)
cordee_bin = str(Path(sys.executable).with_name("cordee"))

sys.path.insert(0, str(ROOT / "tests"))
from netplugins.build import build_fake  # noqa: E402 - the tests' own plugin builder

plugin = build_fake(Path(tempfile.mkdtemp(prefix="cordee-bench-net-")) / "lib" / "libnccl-net-fake.so", 10)
base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NCCL_"))}
with_plugin = dict(base_env, NCCL_NET_PLUGIN=str(plugin))
cases = {
    "python -c pass": ([sys.executable, "-c", "pass"], base_env),
    "cordee net show --json (no plugin)": ([cordee_bin, "net", "show", "--json"], base_env),
    "cordee net show --json (v10 plugin)": ([cordee_bin, "net", "show", "--json"], with_plugin),
    # libfabric's own start-up (provider discovery) is most of net show's time: the floor
    "fi_info -l": (["fi_info", "-l"], base_env),
}
# net show exits 1 on warnings (the fake plugin's host-only NIC: GPUDirect off); 2 would be a failure
results = time_commands(cases, rounds=15, allowed_rc=(0, 1))
base = results["python -c pass"]["median_s"]
rows = []
for name, r in results.items():
    r["ratio_to_python"] = r["median_s"] / base
    rows.append(
        (name, f"{r['median_s'] * 1e3:.1f} ms", f"{r['min_s'] * 1e3:.1f} ms", f"{r['ratio_to_python']:.1f}x")
    )
print_table("cordee net show wall time (15 rounds)", rows, ("command", "median", "min", "vs python (median)"))
out = write_result("net_show", {"cases": results})
print(f"wrote {out}")
