"""Slurm hostlists: the grammar and its errors, and the acceptance test against the real Slurm.

The reference is `scontrol` from Debian's slurm-client: `show hostnames` and `show hostlist` parse
locally, so a slurm.conf naming a controller that does not exist is all they need (the fixture
below proves that on every run). Hundreds of seeded random expressions go through both.
"""

import json
import os
import random
import re
import shutil
import subprocess
import sys

import hostlist as pyhostlist
import pytest

from cordee.errors import InputError
from cordee.launch.hostlist import MAX_HOSTS, MAX_RANGE, compress, expand

SCONTROL = shutil.which("scontrol")
needs_scontrol = pytest.mark.skipif(
    SCONTROL is None,
    reason="scontrol (Debian slurm-client) is not installed; scripts/install-system-deps.sh installs it",
)
CORDEE = [sys.executable, "-m", "cordee"]
SEED, N_EXPRESSIONS = 20240611, 300


# ---------------------------------------------------------------------- generated expressions

PREFIXES = ["nid", "n", "node-", "gpu.a100-", "x1000c0s", "r1n", "login", "a_b", "", "cn-1.rack2-", "N"]
BETWEEN = ["n", "-", ".", "c", "s", "b0n", "-x", ""]


def _number(rnd: random.Random) -> tuple[str, int]:
    lo = rnd.choice([rnd.randint(0, 30), rnd.choice([7, 8, 9, 97, 98, 99, 997, 999]), rnd.randint(0, 5000)])
    width = rnd.choice([0, 0, 0, 2, 3, 4, 6])
    return (f"{lo:0{width}d}" if width else str(lo)), lo


def _range(rnd: random.Random, max_size: int) -> str:
    lo_s, lo = _number(rnd)
    size = rnd.randint(0, max_size)
    if size == 0 and rnd.random() < 0.6:
        return lo_s
    hi = lo + size
    # the high end's own padding does not count in Slurm; vary it to prove that
    hi_s = rnd.choice([str(hi), f"{hi:0{len(lo_s)}d}", f"{hi:0{len(lo_s) + 1}d}"])
    return f"{lo_s}-{hi_s}"


def _item(rnd: random.Random) -> str:
    prefix = rnd.choice(PREFIXES)
    if rnd.random() < 0.2:  # a single host name
        number = _number(rnd)[0] if (rnd.random() < 0.8 or not prefix) else ""
        return prefix + number
    groups = rnd.choice([1, 1, 1, 1, 2, 2, 3, 4])
    max_size, max_ranges = {1: (40, 4), 2: (6, 2), 3: (2, 2), 4: (1, 1)}[groups]
    out = prefix
    for g in range(groups):
        if g:
            out += rnd.choice(BETWEEN)
        out += "[" + ",".join(_range(rnd, max_size) for _ in range(rnd.randint(1, max_ranges))) + "]"
    return out


def generate(n: int = N_EXPRESSIONS, seed: int = SEED) -> list[str]:
    rnd = random.Random(seed)
    exprs = []
    for _ in range(n):
        items = [_item(rnd) for _ in range(rnd.choice([1, 1, 2, 3, 4]))]
        exprs.append(rnd.choice([",", ",", ",", " ", ", "]).join(items))
    return exprs


EXPRS = generate()


# ---------------------------------------------------------------------- the real Slurm


@pytest.fixture(scope="module")
def scontrol(tmp_path_factory):
    """scontrol show hostnames|hostlist ARG -> its output lines; fails on anything but clean output."""
    conf = tmp_path_factory.mktemp("slurm") / "slurm.conf"
    conf.write_text("ClusterName=cordee-hostlist\nSlurmctldHost=no-controller.invalid\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    files = tmp_path_factory.mktemp("hosts")

    def run(verb: str, arg: str) -> list[str]:
        if len(arg) > 100_000:  # above Linux's limit for one argument: scontrol reads "/path" files
            path = files / f"{abs(hash(arg))}.txt"
            path.write_text(arg.replace(",", "\n"))
            arg = str(path)
        p = subprocess.run([SCONTROL, "show", verb, arg], env=env, capture_output=True, text=True, timeout=60)
        # scontrol exits 0 even on "Invalid hostlist"
        if p.returncode or p.stderr.strip() or "Invalid hostlist" in p.stdout:
            raise AssertionError(f"scontrol show {verb} {arg!r}: rc={p.returncode} {p.stdout}{p.stderr}")
        return p.stdout.split()

    assert run("hostnames", "n[1-2]") == ["n1", "n2"]  # local parse, no controller reachable
    return run


@pytest.fixture(scope="module")
def slurm_hosts(scontrol) -> dict[str, list[str]]:
    return {e: scontrol("hostnames", e) for e in EXPRS}


def _report(mismatches: list, what: str) -> str:
    lines = [f"{len(mismatches)} {what} differ from Slurm, e.g.:"]
    lines += [f"  {m}" for m in mismatches[:5]]
    return "\n".join(lines)


def test_generator_covers_the_grammar():
    joined = " ".join(EXPRS)
    assert len(EXPRS) >= 200
    assert "[0" in joined and "-0" in joined  # zero padding
    assert any(re.search(r"\][^,\s\[\]]*\[", e) for e in EXPRS)  # several bracket groups in one name
    assert any(len(_groups(e)) >= 3 for e in EXPRS)
    assert any("," in g for e in EXPRS for g in _groups(e))  # several ranges in one bracket
    assert any(e.count(",") > sum(g.count(",") for g in _groups(e)) for e in EXPRS)  # comma lists
    assert any(p and p[-1] in "-." and p[0].isalpha() and any(c.isdigit() for c in p) for p in PREFIXES)
    assert any("[" not in e for e in EXPRS)  # single hosts
    assert sum(len(expand(e)) for e in EXPRS) > 3000


def _groups(expr: str) -> list[str]:
    return [part.split("]")[0] for part in expr.split("[")[1:]]


@needs_scontrol
def test_expand_matches_scontrol_hostnames(slurm_hosts):
    bad = [(e, expand(e)[:6], want[:6]) for e, want in slurm_hosts.items() if expand(e) != want]
    assert not bad, _report(bad, "expansions (expr, cordee, scontrol)")


@needs_scontrol
def test_compress_matches_scontrol_hostlist_and_round_trips(scontrol, slurm_hosts):
    rnd = random.Random(SEED + 1)
    lists = list(slurm_hosts.values())
    pool = [h for hosts in lists for h in hosts]
    for _ in range(150):  # shuffled, duplicated, mixed-prefix host lists
        sample = rnd.sample(pool, rnd.randint(1, 60))
        lists.append(sample + rnd.choices(sample, k=rnd.randint(1, 3)) if rnd.random() < 0.3 else sample)
        lists.append(sorted(sample))
    bad, trips = [], []
    for hosts in lists:
        got = compress(hosts)
        want = scontrol("hostlist", ",".join(hosts))
        if [got] != want:
            bad.append((hosts[:6], got, want))
        if expand(got) != hosts:
            trips.append((hosts[:6], got))
    assert len(lists) >= 500
    assert not bad, _report(bad, "compressions (hosts, cordee, scontrol)")
    assert not trips, _report(trips, "round trips (hosts, compressed)")


@needs_scontrol
@pytest.mark.parametrize(
    "expr",
    [
        "n[1-2,1-2]",  # python-hostlist drops duplicates unless allow_duplicates=True
        "n[1-3],n2",
        "a[1-2]b[1-2]c[1-2]",  # python-hostlist varies the middle group before the first
        "a[1-3]b[1-2]c[1-2]d[1-2]",
        "n1 n2\tm[1-2]",  # whitespace separates, as in Slurm
        "r[1-2]n[01-02]",
        "n[01-3]",  # padding comes from the low end only
        "n[1-03]",
        "n[9-11]",
        "n[098-101]",
        "n[001-10]",
        "[1-2]",
        "n[1-2]-x[1-2]",
        "n[1-2][3-4]",
        "a,,b,",
        f"n[1-{MAX_RANGE}]",
    ],
)
def test_documented_cases_match_scontrol(scontrol, expr):
    assert expand(expr) == scontrol("hostnames", expr)


@needs_scontrol
def test_python_hostlist_disagrees_with_slurm_where_the_module_says(scontrol):
    # If python-hostlist changes here, update the docstring of cordee/launch/hostlist.py.
    assert pyhostlist.expand_hostlist("n[1-2,1-2]") != scontrol("hostnames", "n[1-2,1-2]")
    e = "a[1-2]b[1-2]c[1-2]"
    assert pyhostlist.expand_hostlist(e) != scontrol("hostnames", e) == expand(e)
    assert pyhostlist.expand_hostlist("n[1-2]x") == ["n1x", "n2x"]  # Slurm: Invalid hostlist
    for hosts in (["n3", "n1", "n2"], ["r1n1", "r1n2", "r2n1", "r2n2"], ["n1", "n1"]):
        assert [pyhostlist.collect_hostlist(hosts)] != scontrol("hostlist", ",".join(hosts))
        assert [compress(hosts)] == scontrol("hostlist", ",".join(hosts))


# ---------------------------------------------------------------------- the CLI, as users run it


def cordee(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CORDEE, "hostlist", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


@needs_scontrol
def test_cli_expand_matches_scontrol_in_one_batch(slurm_hosts):
    # Items separated by commas expand one after the other, so one call checks them all.
    p = cordee("expand", ",".join(EXPRS))
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [h for e in EXPRS for h in slurm_hosts[e]]


@needs_scontrol
def test_cli_expand_and_compress_one_by_one(scontrol, slurm_hosts):
    for e in EXPRS[:8]:
        p = cordee("expand", e, "--json")
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        assert doc["schema"] == "cordee.hostlist/1"
        assert doc["hosts"] == slurm_hosts[e] and doc["count"] == len(slurm_hosts[e])
        hosts = slurm_hosts[e]
        p = cordee("compress", *hosts)
        assert p.stdout.splitlines() == scontrol("hostlist", ",".join(hosts)), p.stderr


def test_cli_compress_forms():
    assert cordee("compress", "n3", "n1,n2", "m[1-2]").stdout == "n[3,1-2],m[1-2]\n"
    assert cordee("compress", "-", stdin="nid001\nnid002 nid003\n").stdout == "nid[001-003]\n"
    doc = json.loads(cordee("compress", "--json", "a1", "a2").stdout)
    assert doc == {"schema": "cordee.hostlist/1", "hostlist": "a[1-2]", "count": 2, "hosts": ["a1", "a2"]}
    assert cordee("expand", "r[1-2]n[01-02]").stdout.split() == ["r1n01", "r1n02", "r2n01", "r2n02"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["expand", "n[3-1]"], "bad hostlist 'n[3-1]': range 3-1 goes backwards"),
        (["expand", "n[1-3"], "bad hostlist 'n[1-3': '[' at character 2 is never closed"),
        (["expand", "n1-3]"], "bad hostlist 'n1-3]': ']' without '['"),
        (["expand", ""], "empty hostlist"),
        (["expand", "n[1-2]x"], "after the last ']'"),
        (["expand", "n[x]"], "bad range 'x'"),
        (["expand", "a[1-1000]b[1-1001]"], f"more than {MAX_HOSTS} hosts"),
        (["compress", "n1", "n;2"], "bad host name 'n;2'"),
        (["compress", "n1", "n;[1-2]"], "';' is not allowed"),
        (["compress", "-"], "no hosts on stdin"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, needle):
    p = cordee(*args, stdin="")
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("cordee: error: "), p.stderr
    assert needle in p.stderr
    assert "Traceback" not in p.stderr


# ---------------------------------------------------------------------- grammar, without Slurm


@pytest.mark.parametrize(
    "expr, hosts",
    [
        ("nid[001-004]", ["nid001", "nid002", "nid003", "nid004"]),
        ("n[1-3,7,9-10]", ["n1", "n2", "n3", "n7", "n9", "n10"]),
        ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
        ("a1,b[2-3]", ["a1", "b2", "b3"]),
        ("cn-1.rack2-[08-10]", ["cn-1.rack2-08", "cn-1.rack2-09", "cn-1.rack2-10"]),
        ("x1000c0s[0-1]b0n[0-1]", ["x1000c0s0b0n0", "x1000c0s0b0n1", "x1000c0s1b0n0", "x1000c0s1b0n1"]),
        (
            "a[1-2]b[1-2]c[1-2]",
            ["a1b1c1", "a1b1c2", "a2b1c1", "a2b1c2", "a1b2c1", "a1b2c2", "a2b2c1", "a2b2c2"],
        ),
        ("n[1-2,1] login", ["n1", "n2", "n1", "login"]),
        ("n[007]", ["n007"]),
        (",n1,,", ["n1"]),
    ],
)
def test_expand(expr, hosts):
    assert expand(expr) == hosts


@pytest.mark.parametrize(
    "expr, needle",
    [
        ("", "empty hostlist"),
        (" , ", "no host names"),
        ("n[1-3", "never closed"),
        ("n1-3]", "']' without '['"),
        ("n[[1-2]]", "nested '['"),
        ("n[3-1]", "goes backwards"),
        ("n[]", "bad range ''"),
        ("n[1,,2]", "bad range ''"),
        ("n[1-]", "bad range '1-'"),
        ("n[+1-2]", "bad range '+1-2'"),
        ("n[ 1-2]", "bad range ' 1-2'"),
        ("n[0x1-2]", "bad range '0x1-2'"),
        ("n[1-2-3]", "bad range '1-2-3'"),
        ("n[1-2]x", "text 'x' after the last ']'"),
        ("n$(id)", "'$' is not allowed"),
        ("n[12345678901234567890]", "number too long"),
        (f"n[1-{MAX_RANGE + 1}]", f"at most {MAX_RANGE} in one range"),
        ("a[1-1000]b[1-1001]", f"more than {MAX_HOSTS} hosts"),
        (",".join([f"n[1-{MAX_RANGE}]"] * 16), f"more than {MAX_HOSTS} hosts"),
    ],
)
def test_expand_rejects(expr, needle):
    with pytest.raises(InputError) as err:
        expand(expr)
    assert needle in str(err.value)
    assert repr(expr)[:100] in str(err.value) or expr == ""


def test_error_names_a_long_expression_briefly():
    expr = ",".join(f"n{i}" for i in range(1000)) + ",n["
    with pytest.raises(InputError) as err:
        expand(expr)
    assert len(str(err.value)) < 300 and "characters" in str(err.value)


@pytest.mark.parametrize(
    "hosts, expr",
    [
        (["n3", "n1", "n2"], "n[3,1-2]"),  # Slurm does not sort...
        (["n1", "n1"], "n[1,1]"),  # ...nor drop duplicates
        (["b1", "a1", "a2"], "b1,a[1-2]"),
        (["n1", "m1", "n2"], "n1,m1,n2"),
        (["n9", "n10"], "n[9-10]"),
        (["n09", "n10"], "n[09-10]"),
        (["n9", "n010"], "n[9,010]"),
        (["n099", "n100", "n0101"], "n[099-100,0101]"),
        (["r1n1", "r1n2", "r2n1"], "r1n[1-2],r2n1"),
        (["1", "2", "3"], "[1-3]"),
        (["a", "a1", "a2", "a"], "a,a[1-2],a"),
        (["login"], "login"),
        (["n1234567890123456789", "n1234567890123456790"], "n1234567890123456789,n1234567890123456790"),
        ([], ""),
    ],
)
def test_compress(hosts, expr):
    assert compress(hosts) == expr


def test_compress_splits_runs_slurm_could_not_read_back():
    hosts = [f"n{i}" for i in range(1, MAX_RANGE + 11)]
    assert compress(hosts) == f"n[1-{MAX_RANGE},{MAX_RANGE + 1}-{MAX_RANGE + 10}]"
    assert expand(compress(hosts)) == hosts


@pytest.mark.parametrize("host", ["", "n[1]", "a,b", "a b", "a\nb", "n;1", "x" * 256])
def test_compress_rejects(host):
    with pytest.raises(InputError, match="bad host name"):
        compress(["n1", host])


def test_round_trip_on_random_host_lists():
    rnd = random.Random(SEED + 2)
    for _ in range(300):
        hosts = [
            rnd.choice(["n", "nid", "r1n", "a-", "", "x"])
            + rnd.choice(["", "0", "00"])
            + str(rnd.randint(0, 120))
            for _ in range(rnd.randint(1, 80))
        ]
        if rnd.random() < 0.5:
            hosts.sort()
        assert expand(compress(hosts)) == hosts
