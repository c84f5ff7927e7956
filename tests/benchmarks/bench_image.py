"""Image recipes and builds: render time of every spec, cache-hit rebuild time, and the cold build
of cpu-ci (debootstrap base + wheelhouse + podman build + squashfs export) with image and .sqsh
sizes. The cold build removes the debootstrap base and the cpu-ci image first (`--warm-base` keeps
the base); it builds into build/cpu-ci/, as `make image IMAGE=cpu-ci` does.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import print_table, time_command, write_result

from cordee.containers.podman import Podman
from cordee.images.render import render_image
from cordee.images.spec import find_root, list_specs, load_spec

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument(
    "--warm-base", action="store_true", help="keep the debootstrap base image (no debootstrap)"
)
parser.add_argument("--rounds", type=int, default=10, help="rounds of render-all (default 10)")
args = parser.parse_args()

root = find_root()
cordee_bin = str(Path(sys.executable).with_name("cordee"))
edf_dir = tempfile.mkdtemp(prefix="cordee-bench-edf-")
env = {**os.environ, "EDF_PATH": edf_dir}
results: dict = {}

# 1. render every spec (load + validate + render + content key), in-process, into a scratch dir
names = list_specs(root)
samples = []
with tempfile.TemporaryDirectory() as scratch:
    for i in range(args.rounds + 1):
        t0 = time.perf_counter()
        for name in names:
            render_image(load_spec(name, root), Path(scratch) / f"{name}-{i}")
        if i:  # the first round warms imports and Jinja2's template cache
            samples.append(time.perf_counter() - t0)
results["render_all"] = {
    "specs": names,
    "median_s": statistics.median(samples),
    "min_s": min(samples),
    "rounds": args.rounds,
}

# 2. cold build of cpu-ci
podman = Podman()
plan = render_image(load_spec("cpu-ci", root), root / "build" / "cpu-ci").plan
podman.call("rmi", plan["tag"], check=False, timeout=300)  # the image first: it holds the base
if not args.warm_base and podman.image_exists(plan["base"]["tag"]):
    podman.call("rmi", plan["base"]["tag"], timeout=300)
t0 = time.perf_counter()
cp = subprocess.run(
    [cordee_bin, "image", "build", "cpu-ci", "--force", "--json"],
    env=env,
    capture_output=True,
    text=True,
    timeout=3 * 3600,  # each step has its own limit (build.py); this bounds the whole command
)
cold_wall = time.perf_counter() - t0
if cp.returncode != 0:
    sys.exit(f"cpu-ci build failed:\n{cp.stderr[-3000:]}")
cold = json.loads(cp.stdout)
results["cpu_ci_build"] = {
    "wall_s": cold_wall,
    "base_from_scratch": not args.warm_base,
    "steps_s": cold["build_timings"],
    "image_bytes": cold["image_bytes"],
    "sqsh_bytes": cold["sqsh_bytes"],
    "tag": cold["tag"],
}

# 3. cache-hit rebuild: the whole command, as `make image` runs it
results["cache_hit_rebuild"] = time_command(
    [cordee_bin, "image", "build", "cpu-ci"], repeats=10, warmup=1, env=env
)
shutil.rmtree(edf_dir, ignore_errors=True)

steps = results["cpu_ci_build"]["steps_s"]
rows = [
    (f"render all {len(names)} specs", f"{results['render_all']['median_s'] * 1e3:.0f} ms (median)"),
    ("cpu-ci cold build (wall)", f"{cold_wall:.0f} s"),
    *[(f"  {step}", f"{steps[step]:.1f} s") for step in ("base_s", "wheels_s", "podman_build_s", "export_s")],
    ("cpu-ci image size (podman)", f"{cold['image_bytes'] / 2**20:.0f} MiB"),
    ("cpu-ci .sqsh size", f"{cold['sqsh_bytes'] / 2**20:.0f} MiB"),
    ("cache-hit rebuild (command)", f"{results['cache_hit_rebuild']['median_s'] * 1e3:.0f} ms (median)"),
]
print_table("Image recipes and builds", rows, ("what", "value"))
podman_version = subprocess.run(
    ["podman", "--version"], capture_output=True, text=True, timeout=60
).stdout.strip()
out = write_result("image_build", results, {"podman": podman_version})
print(f"wrote {out}")
