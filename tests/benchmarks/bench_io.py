"""`cordee io bench` on this machine with its default sizes (10,000 small files, a 512 MiB file):
metadata rates, sequential and random throughput with the page cache dropped, and the ratio of
small-file reads from a squashfs image (squashfuse) over the same files as a directory tree.

It runs in /tmp when /tmp is on a disk, else in /var/tmp: a tmpfs would measure memory, and its
pages cannot be dropped. The whole cordee.io/1 document is kept under "document".
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import print_table, write_result

from cordee.storage import iofs

cordee = str(Path(sys.executable).with_name("cordee"))


def disk_backed_tmp() -> str:
    for candidate in ("/tmp", "/var/tmp"):
        if Path(candidate).is_dir() and not iofs.undroppable(iofs.mount_of(candidate).fstype):
            return candidate
    return tempfile.gettempdir()


KEYS = ("value", "unit", "ops", "seconds", "bytes", "cache", "gib_per_s", "skipped")
where = disk_backed_tmp()
argv = [cordee, "io", "bench", where, "--json"]
run = subprocess.run(argv, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
if run.returncode != 0:
    sys.exit(f"cordee io bench {where}: exit {run.returncode}: {run.stderr.strip()[-500:]}")
doc = json.loads(run.stdout)
figures = {f["name"]: f for f in doc["figures"]}
ratio = figures.get("squashfs/tree open+read", {})
results = {
    "path": doc["path"],
    "filesystem": doc["filesystem"],
    "settings": doc["settings"],
    "figures": {name: {k: f[k] for k in KEYS if k in f} for name, f in figures.items()},
    "squashfs_over_tree_files_per_s": ratio.get("value"),
    "document": doc,
}
print_table(
    f"cordee io bench {doc['path']} ({doc['filesystem']['type']} on {doc['filesystem']['source']})",
    [
        (name, "-" if f["value"] is None else f"{f['value']:.4g}", f["unit"].split(" ")[0], f["ops"],
         "-" if f["seconds"] is None else f"{f['seconds']:.3f}", f.get("skipped") or f["cache"])
        for name, f in figures.items()
    ],
    ("figure", "value", "unit", "ops", "seconds", "page cache"),
)  # fmt: skip
print(f"\nsquashfs/tree small-file read ratio: {ratio.get('value')}")


def first_line(argv: list[str]) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    return (p.stdout + p.stderr).strip().splitlines()[0][:80]


versions = {
    "squashfuse": first_line(["squashfuse", "--version"]),
    "mksquashfs": first_line(["mksquashfs", "-version"]),
}
print(write_result("io", results, versions))
