"""Bad-node isolation by pair tests: which nodes to group in each round, and what the results prove.

Every round tests disjoint groups of nodes concurrently (pairs; one group of three when the count
is odd); a group passes when its measurement clears the thresholds. The plan rests on two
assumptions, stated so an operator can judge them:

- A group that contains a bad node (or a node whose link is bad: it fails with everyone) always
  fails. A passing group therefore proves every member good.
- A healthy group may fail now and then from noise (another job's traffic, a slow start). So a
  node is accused only on evidence that noise rarely produces: it failed two *controlled* tests,
  with two different partners that had been proven good in an earlier round. A healthy node that
  is unlucky once is re-tested, not accused.

Round 1 pairs the nodes at random. Each later round gives every undecided node a partner already
proven good (a different one from any earlier failure), so a bad node is named after round 3:
round 1 makes it a suspect, rounds 2 and 3 are its two controlled failures. That needs enough
good partners: about four healthy nodes per bad one.

A bad link between two particular nodes (only that pair fails) accuses neither node: both pass
with other partners. The failed group is then tested again; if it fails every time (at least
twice) it is reported by suspect_groups() as a link to look at. Pair tests only see the links of
the pairs they form, so a bad link between two nodes never grouped together stays unseen.

Pure functions, no I/O; the same nodes, history and seed always give the same plan, so every rank
of a job can compute it. Cluster-health-scanner (GoogleCloudPlatform) re-pairs failed pairs the
same way; the evidence rule is cordee's.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cordee.errors import InputError, shown

Group = tuple[str, ...]
Round = dict[Group, bool]


def first_round(nodes: Sequence[str], seed: int = 0) -> list[Group]:
    """Disjoint random pairs of all `nodes` (the last group has three nodes when the count is odd);
    [] for fewer than two nodes. Deterministic for a given set of nodes and seed."""
    order = sorted(_checked_nodes(nodes))
    if len(order) < 2:
        return []
    _rng(seed, 0).shuffle(order)
    groups = [order[i : i + 2] for i in range(0, len(order) - 1, 2)]
    if len(order) % 2:
        groups[-1].append(order[-1])
    return [tuple(sorted(g)) for g in groups]


def next_round(nodes: Sequence[str], history: Sequence[Round], seed: int = 0) -> list[Group]:
    """The groups of the next round, given `history` (history[i] = {group: passed} of round i).
    Failed groups whose members all proved good elsewhere are tested again (bad link or noise?);
    every undecided node gets a proven-good partner it has not failed with; undecided nodes left
    over (too few good nodes) are paired among themselves. [] when nothing is left to decide, or
    when nothing more can be learned (e.g. two nodes that failed together twice)."""
    if not history:
        return first_round(nodes, seed)
    ev = _evidence(nodes, history)
    rng = _rng(seed, len(history))
    groups: list[Group] = []
    busy: set[str] = set()
    for group in sorted(ev.link_retests):
        if busy.isdisjoint(group):
            groups.append(group)
            busy.update(group)

    pool = sorted(ev.good - busy)
    rng.shuffle(pool)
    waiting = sorted(ev.undecided)
    rng.shuffle(waiting)
    # Nodes one controlled failure away from a verdict first: they need the scarce good partners most.
    waiting.sort(key=lambda n: -len(ev.controlled[n]))
    leftover = []
    for node in waiting:
        partner = _good_partner(node, pool, ev)
        if partner is None:
            leftover.append(node)
        else:
            groups.append(_pair(node, partner))
    groups.extend(_pair_among(leftover, ev))
    return groups


def verdict(nodes: Sequence[str], history: Sequence[Round]) -> tuple[set[str], set[str], set[str]]:
    """(bad, good, undecided) after the rounds in `history`: good = in a passing group; bad = failed
    two controlled tests with different proven-good partners and never passed; undecided = the rest
    (never tested, or not enough evidence yet)."""
    ev = _evidence(nodes, history)
    return set(ev.bad), set(ev.good), set(ev.undecided)


def suspect_groups(nodes: Sequence[str], history: Sequence[Round]) -> list[Group]:
    """Groups whose members all proved good with other partners but which failed every time they
    were tested, at least twice: a bad link between those nodes (or a fault that needs that
    combination). Sorted."""
    ev = _evidence(nodes, history)
    failing = (g for g, fails in ev.group_fails.items() if fails >= 2 and g not in ev.group_passed)
    return sorted(g for g in failing if ev.all_good(g))


@dataclass
class _Evidence:
    nodes: set[str]
    good: set[str] = field(default_factory=set)
    bad: set[str] = field(default_factory=set)
    undecided: set[str] = field(default_factory=set)
    met: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # every earlier groupmate
    # the partner sets of each node's failed controlled tests (partners proven good beforehand)
    controlled: dict[str, set[frozenset[str]]] = field(default_factory=lambda: defaultdict(set))
    group_fails: dict[Group, int] = field(default_factory=lambda: defaultdict(int))
    group_passed: set[Group] = field(default_factory=set)
    link_retests: set[Group] = field(default_factory=set)

    def all_good(self, group: Group) -> bool:
        return all(n in self.good for n in group)


def _evidence(nodes: Sequence[str], history: Sequence[Round]) -> _Evidence:
    ev = _Evidence(_checked_nodes(nodes))
    if not isinstance(history, Sequence) or isinstance(history, str):
        raise InputError(f"isolation history must be a list of rounds, got {type(history).__name__}")
    for index, rnd in enumerate(history):
        good_before = set(ev.good)  # a controlled test needs partners proven good in an EARLIER round
        for group, passed in _checked_round(index, rnd, ev.nodes):
            for node in group:
                ev.met[node].update(m for m in group if m != node)
            if passed:
                ev.good.update(group)
                ev.group_passed.add(group)
                continue
            ev.group_fails[group] += 1
            for node in group:
                partners = frozenset(m for m in group if m != node)
                if partners <= good_before:
                    ev.controlled[node].add(partners)
    ev.bad = {n for n in ev.nodes - ev.good if len(ev.controlled[n]) >= 2}
    ev.undecided = ev.nodes - ev.good - ev.bad
    ev.link_retests = {
        g for g, fails in ev.group_fails.items() if fails == 1 and g not in ev.group_passed and ev.all_good(g)
    }
    return ev


def _good_partner(node: str, pool: list[str], ev: _Evidence) -> str | None:
    """Take from `pool` a good partner `node` has never been grouped with; else one it has not
    failed a controlled test with (an earlier uncontrolled failure with it proves nothing)."""
    failed_with = set().union(*ev.controlled[node])
    for avoid in (ev.met[node], failed_with):
        for i, candidate in enumerate(pool):
            if candidate not in avoid:
                return pool.pop(i)
    return None


def _pair_among(nodes: list[str], ev: _Evidence) -> list[Group]:
    """Pairs of undecided nodes when no good partner is free: a node never met first, else one it
    failed with only once (that failure may have been noise); a pair that failed twice teaches
    nothing more."""
    groups: list[Group] = []
    free = list(nodes)
    while len(free) >= 2:
        node, chosen = free.pop(0), None
        for i, other in enumerate(free):
            if other not in ev.met[node]:
                chosen = i
                break
            if chosen is None and ev.group_fails.get(_pair(node, other), 0) < 2:
                chosen = i  # a fallback; a never-met node later in the list still wins
        if chosen is not None:
            groups.append(_pair(node, free.pop(chosen)))
    return groups


def _pair(a: str, b: str) -> Group:
    return (a, b) if a < b else (b, a)


def _rng(seed: int, round_index: int) -> random.Random:
    # A string seed is hashed with SHA-512 by random.seed: stable across runs and PYTHONHASHSEED.
    return random.Random(f"cordee.isolation:{seed}:{round_index}")


def _checked_nodes(nodes: Iterable[str]) -> set[str]:
    if isinstance(nodes, str):
        raise InputError("isolation nodes must be a list of hostnames, not one string")
    seen: set[str] = set()
    for node in nodes:
        if not isinstance(node, str) or not node:
            raise InputError(f"isolation node {shown(node)} is not a hostname")
        if node in seen:
            raise InputError(f"isolation node {shown(node)} is listed twice")
        seen.add(node)
    return seen


def _checked_round(index: int, rnd: Round, nodes: set[str]) -> list[tuple[Group, bool]]:
    if not isinstance(rnd, dict):
        raise InputError(f"isolation round {index}: expected {{group: passed}}, got {type(rnd).__name__}")
    out = []
    for group, passed in rnd.items():
        if not isinstance(group, tuple) or len(group) < 2 or not isinstance(passed, bool):
            what = "expected a tuple of >= 2 nodes -> bool"
            raise InputError(f"isolation round {index}: {shown(group)}: {what}")
        unknown = [n for n in group if n not in nodes]
        if unknown:
            node = shown(unknown[0])
            raise InputError(f"isolation round {index}: node {node} is not one of the job's nodes")
        out.append((tuple(sorted(group)), passed))
    return out
