"""Shared pieces of the benchmark scripts: timing of whole commands and the JSON result file.

Every result file records the machine, the versions and the date, so numbers from different
runs can be compared honestly. Files are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    info = {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    try:
        from cordee import __version__

        info["cordee"] = __version__
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def time_command(argv: list[str], repeats: int = 15, warmup: int = 2, env: dict | None = None) -> dict:
    """Wall time of a whole command (seconds): median, min, mean over `repeats` runs."""
    samples = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        subprocess.run(
            argv, check=True, stdout=subprocess.DEVNULL, env=env
        )  # no timeout: its polling wait adds ms
        dt = time.perf_counter() - t0
        if i >= warmup:
            samples.append(dt)
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "mean_s": statistics.fmean(samples),
        "repeats": repeats,
    }


def time_commands(
    cases: dict[str, list[str] | tuple[list[str], dict]],
    rounds: int = 30,
    warmup: int = 3,
    env: dict | None = None,
    allowed_rc: tuple[int, ...] = (0,),
) -> dict[str, dict]:
    """Like time_command for several commands, run round-robin (A B C A B C ...) so that a
    machine's drift during the run affects every command alike; ratios between them are fair.
    A case is an argv, or (argv, env) where it needs its own environment."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(warmup + rounds):
        for name, case in cases.items():
            argv, case_env = case if isinstance(case, tuple) else (case, env)
            t0 = time.perf_counter()
            # no timeout: its polling wait adds ms
            rc = subprocess.run(argv, stdout=subprocess.DEVNULL, env=case_env).returncode
            if i >= warmup:
                samples[name].append(time.perf_counter() - t0)
            if rc not in allowed_rc:
                raise SystemExit(f"{name}: exit {rc} (allowed: {allowed_rc})")
    return {
        name: {
            "median_s": statistics.median(s),
            "min_s": min(s),
            "mean_s": statistics.fmean(s),
            "repeats": rounds,
        }
        for name, s in samples.items()
    }


def write_result(name: str, results: dict, extra_versions: dict | None = None) -> Path:
    """Write tests/benchmarks/results/NAME.json atomically and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": "cordee.bench/1",
        "benchmark": name,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {"python": sys.version.split()[0], **(extra_versions or {})},
        "results": results,
    }
    out = RESULTS_DIR / f"{name}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return out


def print_table(title: str, rows: list[tuple], headers: tuple) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=False)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)))


def run_trainer(argv: list[str], metrics: Path, warmup: int, timeout_s: float, log) -> tuple[str, dict, list]:
    """Run a `cordee train` command line; its stderr (also given to `log`), its metrics records by
    step, and the records after `warmup` steps. RuntimeError with the trainer's last line when it
    fails."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
    log(r.stderr)
    if r.returncode != 0:
        lines = [line for line in r.stderr.splitlines() if line.startswith("cordee")]
        raise RuntimeError(f"trainer exited {r.returncode}: {lines[-1] if lines else r.stderr[-500:]}")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return r.stderr, {row["step"]: row for row in rows}, [row for row in rows if row["step"] > warmup]
