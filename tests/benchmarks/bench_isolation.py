"""Bad-node isolation on a 2,688-node machine: does the pair plan name every bad node within three
rounds, and never a healthy one, and how long does planning take?

Each scenario runs 200 seeds. A seed places the faults (bad nodes: every group with one fails; bad
links: only that pair fails, placed on pairs the first round tests, since untested pairs are
invisible to any pair plan) and draws the noise (a healthy group fails with the given
probability). The simulated cluster is tests/test_preflight_isolation.simulate, the same model as
the unit tests. Every scenario uses the same 200 seeds, so the same noise draws recur across
scenarios (a false link in one often shows in the others). Planning times are the median over
every call of the seeds (first_round, each next_round, verdict), measured apart from the
simulation.
"""

import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from common import print_table, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_preflight_isolation import hosts, simulate  # noqa: E402

from cordee.preflight.isolation import first_round, next_round, suspect_groups, verdict  # noqa: E402

NODES, SEEDS, MAX_ROUNDS = 2688, 200, 6
SCENARIOS = {  # name: (bad nodes, bad links, noise)
    "8 bad nodes": (8, 0, 0.001),
    "4 bad nodes + 4 bad links": (4, 4, 0.001),
    "8 bad links": (0, 8, 0.001),
    "no fault, noise only": (0, 0, 0.001),
    "8 bad nodes, 10x noise": (8, 0, 0.01),
}


def run_scenario(n_bad: int, n_links: int, noise: float) -> dict:
    nodes = hosts(NODES)
    named_by, rounds_used = Counter(), Counter()
    misses = false_accused = healthy_undecided = links_found = false_links = 0
    for seed in range(SEEDS):
        rng = random.Random(f"faults:{seed}")
        bad = set(rng.sample(nodes, n_bad))
        tested = [g for g in first_round(nodes, seed) if len(g) == 2 and not set(g) & bad]
        links = rng.sample(tested, n_links)
        history = simulate(nodes, bad, links, noise=noise, seed=seed, rounds=MAX_ROUNDS, plan_seed=seed)
        rounds_used[len(history)] += 1
        accused, _, undecided = verdict(nodes, history[:3])
        misses += len(bad - accused)
        false_accused += len(accused - bad)
        healthy_undecided += len(undecided - bad)
        found = set(suspect_groups(nodes, history))
        links_found += len(found & set(links))
        false_links += len(found - set(links))
        for k in range(1, len(history) + 1):
            if bad and bad <= verdict(nodes, history[:k])[0]:
                named_by[k] += 1
                break
        else:
            named_by["never" if bad else "no bad node"] += 1
    return {
        "bad_nodes": n_bad,
        "bad_links": n_links,
        "noise": noise,
        "seeds": SEEDS,
        "all_bad_named_after_round": dict(sorted(named_by.items(), key=str)),
        "rounds_until_plan_empty": dict(sorted(rounds_used.items())),
        "misses_after_3_rounds": misses,
        "false_accusations_after_3_rounds": false_accused,
        "healthy_undecided_after_3_rounds": healthy_undecided,
        "links_found": links_found,
        "links_placed": n_links * SEEDS,
        "false_links": false_links,
    }


def planning_times(seeds: int = 40) -> dict:
    """Median time of each planning call on 2,688 nodes with 8 bad nodes and 0.1% noise."""
    nodes = hosts(NODES)
    samples = {"first_round": [], "next_round": [], "verdict": []}
    for seed in range(seeds):
        bad = set(random.Random(seed).sample(nodes, 8))
        history = simulate(nodes, bad, noise=0.001, seed=seed, rounds=MAX_ROUNDS)
        t0 = time.perf_counter()
        first_round(nodes, 0)
        samples["first_round"].append(time.perf_counter() - t0)
        for k in range(1, len(history) + 1):
            t0 = time.perf_counter()
            next_round(nodes, history[:k])
            samples["next_round"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        verdict(nodes, history)
        samples["verdict"].append(time.perf_counter() - t0)
    return {
        name: {"median_ms": 1e3 * statistics.median(s), "max_ms": 1e3 * max(s), "calls": len(s)}
        for name, s in samples.items()
    }


def main() -> None:
    results = {"nodes": NODES, "max_rounds": MAX_ROUNDS, "scenarios": {}}
    rows = []
    for name, (n_bad, n_links, noise) in SCENARIOS.items():
        t0 = time.perf_counter()
        r = run_scenario(n_bad, n_links, noise)
        r["wall_s"] = round(time.perf_counter() - t0, 1)
        results["scenarios"][name] = r
        named = ", ".join(
            f"r{k}: {v}" if isinstance(k, int) else f"{k}: {v}"
            for k, v in r["all_bad_named_after_round"].items()
        )
        rounds = ", ".join(f"{k}: {v}" for k, v in r["rounds_until_plan_empty"].items())
        links = f"{r['links_found']}/{r['links_placed']} (+{r['false_links']} false)"
        rows.append(
            (
                name,
                f"{noise:.1%}",
                named,
                r["misses_after_3_rounds"],
                r["false_accusations_after_3_rounds"],
                r["healthy_undecided_after_3_rounds"],
                links,
                rounds,
            )
        )
    results["planning"] = planning_times()
    print_table(
        f"Isolation on {NODES} nodes, {SEEDS} seeds per scenario (misses / false accusations after 3 rounds)",
        rows,
        (
            "scenario",
            "noise",
            "all bad named after",
            "misses",
            "false acc.",
            "healthy undecided",
            "links found",
            "rounds until done",
        ),
    )
    print_table(
        "Planning time per call (2,688 nodes)",
        [
            (k, f"{v['median_ms']:.1f}", f"{v['max_ms']:.1f}", v["calls"])
            for k, v in results["planning"].items()
        ],
        ("call", "median ms", "max ms", "calls"),
    )
    print(f"\nwrote {write_result('isolation', results)}")


if __name__ == "__main__":
    main()
