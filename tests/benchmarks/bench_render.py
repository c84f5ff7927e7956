"""Render time of every image spec (load + validate + render into a build folder).

In-process per spec: the first render of a process (imports Jinja2 and PyYAML, compiles the
templates) and the median of warm renders; a uenv render includes packing cordee's source
archive. Then one fresh process rendering all specs, as `make render` does.
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import print_table, write_result

from cordee.images.render import render_image
from cordee.images.spec import find_root, list_specs, load_spec

ROUNDS = 20
root = find_root(Path(__file__).resolve().parent)
names = list_specs(root)
results = {}
with tempfile.TemporaryDirectory() as tmp:
    for name in names:
        samples = []
        for i in range(ROUNDS + 1):
            t0 = time.perf_counter()
            render_image(load_spec(name, root), Path(tmp) / name)
            dt = time.perf_counter() - t0
            if i == 0:
                results[name] = {"first_s": dt}
            else:
                samples.append(dt)
        results[name].update(
            median_s=statistics.median(samples), min_s=min(samples), rounds=ROUNDS,
            files=len(list((Path(tmp) / name).rglob("*"))),
        )  # fmt: skip
    script = (
        "import sys; from pathlib import Path\n"
        "from cordee.images.spec import load_spec\nfrom cordee.images.render import render_image\n"
        "for n in sys.argv[2:]:\n    render_image(load_spec(n), Path(sys.argv[1]) / n)\n"
    )
    whole = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", script, str(Path(tmp) / "all"), *names], check=True, timeout=300
        )
        whole.append(time.perf_counter() - t0)
results["all specs, fresh process"] = {"median_s": statistics.median(whole), "min_s": min(whole), "rounds": 5}

rows = [
    (name, f"{r['first_s'] * 1e3:.1f} ms" if "first_s" in r else "-", f"{r['median_s'] * 1e3:.1f} ms",
     f"{r['min_s'] * 1e3:.1f} ms")
    for name, r in results.items()
]  # fmt: skip
print_table("Render time (load + validate + render)", rows, ("spec", "first in process", "median", "min"))
import jinja2  # noqa: E402
import yaml  # noqa: E402

out = write_result("render", {"specs": results}, {"jinja2": jinja2.__version__, "pyyaml": yaml.__version__})
print(f"wrote {out}")
