"""Bad-node isolation (pair rounds, evidence rule, links) and stragglers: every rule on hand-made
histories, then simulated clusters whose bad nodes, bad links and noise the plan does not know:
a hypothesis property over 2-300 nodes and a 2,688-node run over 20 seeds (the 200-seed run with
timings is tests/benchmarks/bench_isolation.py, which imports `simulate` from here)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cordee.errors import InputError
from cordee.preflight.isolation import first_round, next_round, suspect_groups, verdict
from cordee.preflight.stragglers import find_stragglers

NOISE = 0.001  # a healthy group fails one test in a thousand


def simulate(nodes, bad_nodes=(), bad_links=(), *, noise=NOISE, seed=0, rounds=3, plan_seed=0):
    """Run the plan against a simulated cluster: a group fails when it holds a bad node, or both
    ends of a bad link, or (healthy) with probability `noise`. Returns the history."""
    world = random.Random(f"world:{seed}")
    bad, links = set(bad_nodes), [set(link) for link in bad_links]
    history = []
    while len(history) < rounds:
        groups = next_round(nodes, history, plan_seed)
        if not groups:
            break
        history.append(
            {
                g: not (bad & set(g) or any(link <= set(g) for link in links)) and world.random() >= noise
                for g in groups
            }
        )
    return history


def hosts(n):
    return [f"nid{i:06d}" for i in range(n)]


# --- first_round ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 5, 101, 2688])
def test_first_round_covers_every_node_once_in_pairs(n):
    groups = first_round(hosts(n), seed=7)
    members = [m for g in groups for m in g]
    assert sorted(members) == hosts(n)
    sizes = Counter(len(g) for g in groups)
    expected = Counter({2: n // 2 - 1, 3: 1} if n % 2 else {2: n // 2})
    assert sizes == +expected  # + drops a zero count (three nodes: one group of three)
    assert all(g == tuple(sorted(g)) for g in groups)


def test_first_round_is_deterministic_and_seeded():
    nodes = hosts(100)
    assert first_round(nodes, 1) == first_round(list(reversed(nodes)), 1)  # input order does not matter
    assert first_round(nodes, 1) != first_round(nodes, 2)
    assert first_round(["a"]) == [] and first_round([]) == []


@pytest.mark.parametrize(
    "nodes,words",
    [
        (["a", "a"], "listed twice"),
        (["a", ""], "not a hostname"),
        (["a", 3], "not a hostname"),
        ("ab", "not one string"),
    ],
)
def test_bad_node_lists(nodes, words):
    with pytest.raises(InputError, match=words):
        first_round(nodes)


@pytest.mark.parametrize(
    "history,words",
    [
        ([{("a", "x"): True}], "node 'x' is not one of the job's nodes"),
        ([{("a",): True}], "expected a tuple of >= 2 nodes"),
        ([{("a", "b"): "yes"}], "expected a tuple of >= 2 nodes -> bool"),
        ([[("a", "b")]], "expected {group: passed}"),
        ("ab", "must be a list of rounds"),
    ],
)
def test_bad_histories(history, words):
    with pytest.raises(InputError, match=words):
        verdict(["a", "b", "c"], history)


# --- the evidence rule, on hand-made histories ------------------------------------------------------------


def test_a_pass_proves_every_member_good_and_a_failure_alone_proves_nothing():
    bad, good, undecided = verdict(list("abcd"), [{("a", "b"): True, ("c", "d"): False}])
    assert (bad, good, undecided) == (set(), {"a", "b"}, {"c", "d"})
    assert verdict(list("abcd"), []) == (set(), set(), set("abcd"))


def test_two_controlled_failures_with_different_good_partners_accuse():
    r1 = {("a", "b"): True, ("c", "d"): True, ("e", "x"): False}
    r2 = {("a", "x"): False, ("b", "e"): True, ("c", "d"): True}
    r3 = {("c", "x"): False, ("a", "b"): True}
    assert verdict(list("abcdex"), [r1, r2]) == (set(), set("abcde"), {"x"})  # one controlled failure
    assert verdict(list("abcdex"), [r1, r2, r3]) == ({"x"}, set("abcde"), set())


def test_the_same_good_partner_twice_is_not_enough():
    r1 = {("a", "b"): True, ("c", "x"): False}
    again = {("a", "x"): False, ("b", "c"): True}
    assert verdict(list("abcx"), [r1, again, again])[0] == set()  # a bad a-x link would look the same


def test_a_partner_proven_good_only_later_does_not_make_a_failure_controlled():
    # round 1: x fails with c; c proves good in round 2, x fails with the good a: only ONE controlled
    r1 = {("a", "b"): True, ("c", "x"): False}
    r2 = {("a", "x"): False, ("b", "c"): True}
    assert verdict(list("abcx"), [r1, r2]) == (set(), set("abc"), {"x"})


def test_a_pass_after_failures_clears_a_node():
    r1 = {("a", "b"): True, ("c", "d"): True, ("x", "y"): False}
    r2 = {("a", "x"): False, ("b", "y"): True, ("c", "d"): True}
    r3 = {("c", "x"): True, ("a", "b"): True}  # the round-2 failure was noise
    assert verdict(list("abcdxy"), [r1, r2, r3]) == (set(), set("abcdxy"), set())


# --- next_round ---------------------------------------------------------------------------------------------


def test_next_round_pairs_suspects_with_good_nodes_they_have_not_met():
    nodes = hosts(20)
    r1 = first_round(nodes)
    failing = r1[3]
    history = [{g: g != failing for g in r1}]
    r2 = next_round(nodes, history)
    assert len(r2) == len(failing)
    for group in r2:
        suspect = [n for n in group if n in failing]
        assert len(group) == 2 and len(suspect) == 1
        partner = next(n for n in group if n not in failing)
        assert partner not in failing
    assert next_round(nodes, history) == r2  # deterministic


def test_the_second_controlled_test_uses_a_new_partner():
    nodes = hosts(12)
    history = simulate(nodes, bad_nodes=["nid000004"], noise=0.0, rounds=2)
    r3 = next_round(nodes, history)
    [group] = [g for g in r3 if "nid000004" in g]
    earlier = {n for rnd in history for g in rnd for n in g if "nid000004" in g}
    assert not (set(group) - {"nid000004"}) & earlier


def test_nothing_left_to_decide_ends_the_plan():
    nodes = hosts(10)
    history = [{g: True for g in first_round(nodes)}]
    assert next_round(nodes, history) == []
    assert next_round(["a"], []) == [] and next_round(nodes, []) == first_round(nodes)


def test_two_nodes_that_fail_are_retested_once_then_left_undecided():
    history = simulate(["a", "b"], bad_nodes=["a"], rounds=10)
    assert [list(r) for r in history] == [[("a", "b")], [("a", "b")]]
    assert verdict(["a", "b"], history) == (set(), set(), {"a", "b"})


def test_noise_in_a_two_node_job_is_cleared_by_the_retest():
    history = [{("a", "b"): False}]
    assert next_round(["a", "b"], history) == [("a", "b")]
    history.append({("a", "b"): True})
    assert (
        verdict(["a", "b"], history) == (set(), {"a", "b"}, set()) and next_round(["a", "b"], history) == []
    )


def test_without_good_partners_suspects_are_paired_among_themselves():
    r1 = {("a", "h1"): False, ("b", "h2"): False}  # two bad nodes, no pass: nobody proven good
    r2 = next_round(["a", "b", "h1", "h2"], [r1])
    assert len(r2) == 2 and not set(r2) & set(r1)


def test_a_bad_link_accuses_neither_node_and_is_reported_after_its_retest():
    nodes = hosts(40)
    link = first_round(nodes)[5]  # a pair the first round tests
    history = simulate(nodes, bad_links=[link], noise=0.0, rounds=3)
    bad, good, undecided = verdict(nodes, history)
    assert bad == set() and undecided == set() and set(link) <= good
    assert suspect_groups(nodes, history) == [link]
    assert suspect_groups(nodes, history[:2]) == []  # one failure could be noise: retested first


def test_noise_alone_accuses_nobody_and_reports_no_link():
    nodes = hosts(60)
    history = [{g: i != 4 for i, g in enumerate(first_round(nodes))}]  # one healthy pair fails once
    history = _continue(nodes, history)
    assert verdict(nodes, history) == (set(), set(nodes), set())
    assert suspect_groups(nodes, history) == []


def _continue(nodes, history, rounds=4):
    while len(history) < rounds and (groups := next_round(nodes, history)):
        history = history + [{g: True for g in groups}]
    return history


# --- simulated clusters ---------------------------------------------------------------------------


def _check_simulation(n, n_bad, n_links, seed, noise=NOISE):
    rng = random.Random(f"faults:{seed}")
    nodes = hosts(n)
    bad = set(rng.sample(nodes, n_bad))
    healthy = [x for x in nodes if x not in bad]
    tested = [g for g in first_round(nodes) if len(g) == 2 and not set(g) & bad]
    links = rng.sample(tested, min(n_links, len(tested)))  # links the first round tests, so they can be seen
    longer = simulate(nodes, bad, links, noise=noise, seed=seed, rounds=4)  # a 4th round: link retests
    history = longer[:3]
    accused, good, undecided = verdict(nodes, history)
    assert accused <= bad, f"healthy node accused: {sorted(accused - bad)}"
    assert accused == bad, f"bad node not named in 3 rounds: {sorted(bad - accused)}"
    assert not set(healthy) & undecided, f"healthy nodes left undecided: {sorted(set(healthy) & undecided)}"
    assert set(suspect_groups(nodes, longer)) <= set(links), "a link reported that is not bad"
    return history


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 300),
    faults=st.integers(0, 8),
    link_share=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_property_bad_nodes_named_within_three_rounds_and_no_healthy_node_accused(
    n, faults, link_share, seed
):
    faults = min(faults, max(0, (n - 6) // 4))  # about four healthy nodes per fault give enough good partners
    n_links = round(faults * link_share)
    _check_simulation(n, faults - n_links, n_links, seed)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(2, 60), bad_share=st.floats(0, 1), seed=st.integers(0, 2**32))
def test_property_no_healthy_node_accused_even_when_most_nodes_are_bad(n, bad_share, seed):
    nodes = hosts(n)
    bad = set(random.Random(seed).sample(nodes, round(n * bad_share)))
    history = simulate(nodes, bad, noise=0.01, seed=seed, rounds=6)
    accused, good, _ = verdict(nodes, history)
    assert accused <= bad and not good & bad


@pytest.mark.parametrize("seed", range(20))
def test_2688_nodes_eight_faults(seed):
    history = _check_simulation(2688, 8 - seed % 4, seed % 4, seed)
    assert len(history) == 3


# --- stragglers ------------------------------------------------------------------------------------


def test_stragglers_are_ranks_slower_than_ratio_times_the_median():
    times = {0: 1.0, 1: 1.1, 2: 0.9, 3: 1.0, 4: 2.5, 5: 1.5}
    found = find_stragglers(times, 1.4)
    assert found == {4: pytest.approx(2.5 / 1.05), 5: pytest.approx(1.5 / 1.05)}
    assert find_stragglers(times, 1.5 / 1.05) == {4: pytest.approx(2.5 / 1.05)}  # strictly above
    assert find_stragglers({0: 1.0, 1: 1.0, 2: 1.0}, 1.01) == {}


def test_stragglers_need_three_ranks_and_a_measured_median():
    assert find_stragglers({0: 1.0, 1: 9.0}, 1.1) == {}
    assert find_stragglers({}, 1.1) == {}
    assert find_stragglers({0: 0.0, 1: 0.0, 2: 5.0}, 1.1) == {}


@pytest.mark.parametrize(
    "times,ratio,words",
    [
        ({0: 1.0, 1: 1.0, 2: 1.0}, 0, "ratio must be a finite number > 0"),
        ({0: 1.0, 1: 1.0, 2: 1.0}, float("nan"), "ratio"),
        ({0: 1.0, 1: 1.0, 2: 1.0}, True, "ratio"),
        ({0: 1.0, 1: float("inf"), 2: 1.0}, 1.2, "time of rank 1 must be a finite number"),
        ({0: 1.0, 1: -1.0, 2: 1.0}, 1.2, "time of rank 1 must be >= 0"),
        ({"0": 1.0, 1: 1.0, 2: 1.0}, 1.2, "'0' is not a rank number"),
    ],
)
def test_straggler_inputs(times, ratio, words):
    with pytest.raises(InputError, match=words):
        find_stragglers(times, ratio)
