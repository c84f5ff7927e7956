"""What the collector's process shows and writes: a progress line per finished check (stderr),
the table at the end, and the files asked for (JSON, JUnit, plot, exclude list), through the
report module. Used in the collector's threads; prints only from there."""

from __future__ import annotations

import socket
import sys
import time
from collections import Counter

from cordee.errors import CordeeError, one_line
from cordee.preflight import report
from cordee.preflight.aggregate import finalize, judge_collective
from cordee.preflight.results import Result, exit_code, severity, worst


def _say(line: str, stream=None) -> None:
    stream = stream or sys.stderr
    stream.write(one_line(line) + "\n")
    stream.flush()


class Reporting:
    def __init__(self, opts, plan, scheduler: str) -> None:
        self.opts, self.plan, self.scheduler = opts, plan, scheduler
        self.started_wall, self.started = time.time(), time.monotonic()
        self.results: list[Result] = []
        self.meta: dict = {}

    def progress(self, check: str, results: list[Result]) -> None:
        """One line for a check that every rank running it has finished."""
        if self.opts.quiet:
            return
        judged = [judge_collective(r, self.plan.profile) if _sweep(r) else r for r in results]
        _say(report.progress_line(_summary(check, judged)))

    def conclude(self, outcome) -> int:
        """The final results (aggregate verdicts, and the errors that ended the run); the table.
        Returns the exit code."""
        self.results = finalize(outcome.results, self.plan.profile) + outcome.errors
        code = exit_code(self.results)
        nodes = list(dict.fromkeys(p.node for _, p in sorted(outcome.ranks.items())))  # in rank order
        self.meta = {
            "level": self.opts.level,
            "system": self.plan.profile.name,
            "nodes": nodes or [socket.gethostname()],
            "ranks": max(len(outcome.ranks), 1),
            "started": self.started_wall,
            "duration_s": round(time.monotonic() - self.started, 3),
            "device": self.plan.device,
            "backend": self.plan.backend,
            "scheduler": self.scheduler,
            "checks": [c.name for c in self.plan.checks],
        }
        for e in outcome.errors:
            _say(f"cordee preflight: error: {e.detail}")
        return code

    def _show(self) -> None:
        """The table (or with --quiet the summary line), after the files: its exit code is final."""
        out = sys.stderr if self.opts.json_path == "-" else sys.stdout
        if self.opts.quiet:
            _say(report.summary_line(self.results), out)
        else:
            out.write(report.table(self.results) + "\n")
            out.flush()

    def write(self, code: int) -> int:
        """The files asked for; a file that cannot be written is said in one line and makes the
        exit code at least 2 (CI would otherwise read an old report)."""
        o, failed = self.opts, False
        jobs = []
        if o.json_path:
            jobs.append(("json", self._json))
        if o.junit_path:
            jobs.append(("junit", lambda: report.write_junit(o.junit_path, self.results, self.meta)))
        if o.plot_path:
            jobs.append(("plot", self._plot))
        if o.exclude_path is not None:
            jobs.append(
                ("exclude", lambda: report.write_exclude(o.exclude_path, report.bad_nodes(self.results)))
            )
        for what, job in jobs:
            try:
                job()
            except CordeeError as e:
                _say(f"cordee preflight: {what}: {e}")
                self.results.append(Result("preflight.output", "fail", detail=f"--{what}: {e}"))
                failed = True
        self._show()
        bad = report.bad_nodes(self.results)
        if bad and not o.quiet:
            _say(f"cordee preflight: exclude these nodes: --exclude={report.exclude_hostlist(bad)}")
        return max(code, 2) if failed else code

    def _json(self) -> None:
        doc = report.document(self.results, self.meta)
        if self.opts.json_path == "-":
            import json

            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
            sys.stdout.flush()
        else:
            report.write_json(self.opts.json_path, doc)

    def _plot(self) -> None:
        try:
            report.plot(self.results, self.opts.plot_path)
        except report.NoPlotData as e:
            _say(f"cordee preflight: no plot: {e}")


def _sweep(r: Result) -> bool:
    return r.check.startswith("collective.") and bool((r.data or {}).get("rows"))


def _summary(check: str, results: list[Result]) -> Result:
    """One result standing for a check's results: itself when alone; else the worst, with counts."""
    if len(results) == 1:
        return results[0]
    if not results:
        return Result(check, "ok", detail="nothing to report on this run")
    top = max(results, key=lambda r: severity(r.status))
    counts = Counter(r.status for r in results)
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: severity(kv[0])))
    nodes = {r.node for r in results}
    where = f"{len(nodes)} nodes" if len(nodes) > 1 else next(iter(nodes)) or "job"
    detail = f"{len(results)} results on {where} ({tally})"
    if top.status == "skip":
        detail += f": {top.detail}"
    if top.status != "ok":
        detail += (
            f"; worst on {top.node or 'job'}{'' if top.rank is None else f' rank {top.rank}'}: {top.detail}"
        )
    duration = max(r.duration_s for r in results)
    return Result(check, worst(r.status for r in results), detail=detail, duration_s=duration)
