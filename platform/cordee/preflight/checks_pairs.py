"""Bad-node isolation: rounds of pair tests, every pair at once (one rank per node, a busbw
measured by an all_reduce in a group of two or three nodes), re-pairing the members of failing
pairs with nodes already proven good until every node is decided (isolation.first_round /
next_round / verdict, pure functions; the same re-pairing idea as Google's cluster-health-scanner).

Every rank computes the same plan from the same exchanged measurements: the pair busbws of a round
travel over the gloo control group, so no rank needs the collector to go on. A pair passes when
its busbw reaches the profile's pair_busbw_gbps AND pair_relative x the median of the first round
(a slow link stands out against its peers even where the absolute threshold is loose). The first
round is the reference because it measures every node at once; later rounds re-test a few groups,
often a single one, whose own median would only compare a pair with itself."""

from __future__ import annotations

import statistics

from cordee.preflight.checks_torch import dist_of, gather_objects
from cordee.preflight.context import Context
from cordee.preflight.results import Result

MAX_ROUNDS = 4  # the simulation (2,688 nodes, up to 8 bad) decides everything within 3
CHECK = "isolation"


def isolation_check(ctx: Context) -> list[Result]:
    import torch.distributed as dist

    from cordee.bench.collectives import sweep
    from cordee.preflight import isolation

    if ctx.nnodes < 2:
        return [] if ctx.rank else [Result(CHECK, "skip", detail="one node: no pairs to test")]
    d = dist_of(ctx)
    nodes = d.nodes()
    leader = {}  # node -> its lowest rank: the one that runs the pair test
    for rank, (node, _) in enumerate(d.where):
        leader.setdefault(node, rank)
    size = max(ctx.profile.sweep)
    absolute = ctx.profile.threshold("pair_busbw_gbps")
    relative = ctx.profile.threshold("pair_relative")
    history: list[dict[tuple[str, ...], bool]] = []
    rounds: list[list[dict]] = []
    plan = isolation.first_round(nodes)
    while plan and len(history) < MAX_ROUNDS:
        mine, _ = dist.new_subgroups_by_enumeration([[leader[n] for n in g] for g in plan])
        busbw = None
        if mine is not None and leader[ctx.node] == ctx.rank:
            rows = sweep(
                "all_reduce",
                [size],
                group=mine,
                device=d.device,
                iters=3 * ctx.scale,
                warmup=1,
                check=False,
                timeout_s=60.0 * ctx.scale,
            )
            busbw = rows[0].busbw_gbps
        measured = {tuple(g): None for g in plan}
        for item in gather_objects(ctx, (ctx.node, busbw)):
            node, bw = item
            for g in plan:
                if bw is not None and g[0] == node:
                    measured[tuple(g)] = float(bw)
        if not history:  # the reference: every node measured once, at the same time
            median = statistics.median([bw for bw in measured.values() if bw is not None] or [0.0])
        passed, rows_out = {}, []
        for g, bw in measured.items():
            ok_abs = bw is not None and (absolute is None or bw >= absolute.fail)
            ok_rel = bw is not None and (relative is None or bw >= relative.fail * median)
            passed[g] = ok_abs and ok_rel
            rows_out.append(
                {
                    "nodes": list(g),
                    "busbw_gbps": bw,
                    "relative": bw / median if bw and median else None,
                    "passed": passed[g],
                }
            )
        history.append(passed)
        rounds.append(rows_out)
        plan = isolation.next_round(nodes, history)
    if ctx.rank != 0:
        return []
    bad, good, undecided = isolation.verdict(nodes, history)
    out = _results(nodes, bad, undecided, rounds, size, absolute, relative)
    for group in isolation.suspect_groups(nodes, history):  # both ends fine with others: the link?
        detail = f"{' and '.join(group)} failed together every time, each passed with other partners"
        out.append(
            Result(f"{CHECK}.link", "warn", detail=f"suspect link: {detail}", data={"nodes": list(group)})
        )
    return out


def _results(nodes, bad, undecided, rounds, size, absolute, relative) -> list[Result]:
    data = {"rounds": rounds, "bytes": size, "metric": "pair_busbw_gbps"}
    rule = []
    if absolute is not None:
        rule.append(f"busbw >= {absolute.fail:g} GB/s")
    if relative is not None:
        rule.append(f">= {relative.fail:g} x the first round's median")
    rule_text = " and ".join(rule) or "no threshold in the system profile"
    out = [
        Result(
            CHECK,
            "fail" if bad else "warn" if undecided else "ok",
            detail=f"{len(nodes)} nodes, {len(rounds)} round(s) of pair tests at {size} B ({rule_text}): "
            f"{len(bad)} bad, {len(undecided)} undecided",
            value=float(len(bad)),
            unit="nodes",
            data=data,
        )
    ]
    for node in sorted(bad) + sorted(undecided):
        tests = [(r, row) for r, rows in enumerate(rounds, 1) for row in rows if node in row["nodes"]]
        seen = "; ".join(
            f"round {r}: with {', '.join(n for n in row['nodes'] if n != node)} "
            f"{_bw(row['busbw_gbps'])} ({'pass' if row['passed'] else 'fail'})"
            for r, row in tests
        )
        status = "fail" if node in bad else "warn"
        what = "bad node" if node in bad else "undecided"
        out.append(
            Result(f"{CHECK}.node", status, node=node, detail=f"{what}: {seen}", data={"tests": tests})
        )
    return out


def _bw(value) -> str:
    return "no measurement" if value is None else f"{value:.3g} GB/s"
