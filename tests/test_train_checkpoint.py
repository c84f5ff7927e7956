"""cordee.train.checkpoint and cordee.train.signals with real files, real processes and a real
gloo process group: sync and async round trips (bit-identical), staging copies, keep-K, `latest`
replaced atomically, damaged checkpoints skipped with a warning, SIGKILL during a save, a
2-rank FSDP2 checkpoint loaded by one process; stop signals delivered with os.kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from launchvars import clean_env as launch_free

torch = pytest.importorskip("torch")

from cordee.errors import CordeeError, InputError  # noqa: E402
from cordee.train.checkpoint import Checkpointer  # noqa: E402
from cordee.train.ckptlayout import latest_step  # noqa: E402
from cordee.train.signals import EXIT_STOPPED, StopRequest, parse_signal  # noqa: E402

CORDEE = str(Path(sys.executable).with_name("cordee"))
PLATFORM = str(Path(__file__).resolve().parents[1] / "platform")

# Shared by the test process and the workers: a model whose layers FSDP2 can shard one by one.
MODEL = textwrap.dedent("""
    import torch

    def make_model(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))

    def make_optim(model):
        return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)

    def train_step(model, optim, seed):
        g = torch.Generator().manual_seed(seed)
        model(torch.randn(8, 16, generator=g)).square().mean().backward()
        optim.step()
        optim.zero_grad()

    def full_state(model, optim):
        # every value as a full tensor, whatever the sharding, for comparisons
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd, osd = get_state_dict(model, optim, options=opts)
        return copied({"model": msd, "optim": osd})

    def copied(x):
        # values, not views: some entries (AdamW's step counts) alias the live optimizer state
        if isinstance(x, dict):
            return {k: copied(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(copied(v) for v in x)
        return x.detach().clone() if isinstance(x, torch.Tensor) else x
""")
_shared: dict = {}
exec(MODEL, _shared)  # the same definitions in this process
make_model, make_optim = _shared["make_model"], _shared["make_optim"]
train_step, full_state = _shared["train_step"], _shared["full_state"]

# Two ranks, gloo, FSDP2 (fully_shard per layer): sync save, async save then an immediate
# parameter change (staging must have copied), keep-K, round trip into fresh models, RNG, and a
# damaged newest checkpoint skipped by both ranks together.
WORKER = MODEL + textwrap.dedent("""
    import datetime, json, os, sys
    import torch.distributed as dist
    from cordee.train.checkpoint import Checkpointer

    def fsdp(model):
        try:
            from torch.distributed.fsdp import fully_shard
        except ImportError:
            from torch.distributed._composable.fsdp import fully_shard
        for layer in (model[0], model[2]):
            fully_shard(layer)
        return fully_shard(model)

    ckdir, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    lines = []
    ck = Checkpointer(ckdir, 2, async_save=True, rank=rank, world_size=world, log=lines.append)
    model = fsdp(make_model(0)); optim = make_optim(model)
    expected = {}
    for step in (1, 2, 3):
        train_step(model, optim, step)
        torch.manual_seed(100 + 10 * step + rank)  # a distinct RNG state per rank and step
        rng = torch.get_rng_state()
        ck.save(step, {"model": model, "optim": optim}, {"config_hash": "h1", "pos": step}, sync=step == 1)
        expected[step] = (full_state(model, optim), rng)
        train_step(model, optim, 50 + step)  # changes parameters while the async write may run
    ck.wait()
    dirs = sorted(os.listdir(ckdir))

    def fresh_load(seed):
        m = fsdp(make_model(seed)); o = make_optim(m)
        extra = ck.load_latest({"model": m, "optim": o}, config_hash="h1")
        return m, o, extra

    m, o, extra = fresh_load(7)
    rng_after = torch.get_rng_state()
    state = full_state(m, o)
    if rank == 0:
        torch.save(expected[2][0], os.path.join(out, "expected-2.pt"))
        torch.save(expected[3][0], os.path.join(out, "expected-3.pt"))
        torch.save(state, os.path.join(out, "loaded-3.pt"))
        meta = os.path.join(ckdir, "step-00000003", ".metadata")  # same size, garbage content
        size = os.path.getsize(meta)
        with open(meta, "r+b") as f:
            f.write(b"\\0" * size)
    dist.barrier()
    m, o, extra2 = fresh_load(8)
    state = full_state(m, o)  # a collective: gathers the shards
    if rank == 0:
        torch.save(state, os.path.join(out, "fallback-2.pt"))
    report = {"rank": rank, "dirs": dirs, "extra": extra, "extra2": extra2, "log": lines,
              "rng_restored": torch.equal(rng_after, expected[3][1])}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # torch 2.13's gloo threads abort now and then at interpreter finalization
""")


def clean_env(**extra):
    return launch_free(path=PLATFORM, **extra)


def assert_same(a, b, path="state"):
    """Bit-identical nested state dicts."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck2")
    ckdir, out = root / "ck", root / "out"
    out.mkdir()
    script = root / "worker.py"
    script.write_text(WORKER)
    cmd = [CORDEE, "launch", "--profile", "none", "--nproc-per-node", "2", "--"]
    r = subprocess.run(
        [*cmd, sys.executable, str(script), str(ckdir), str(out)],
        env=clean_env(GLOO_SOCKET_IFNAME="lo"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    reports = [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
    return ckdir, out, reports


def test_two_ranks_fsdp2_async_save_keep_k_and_round_trip(two_rank_run):
    ckdir, out, reports = two_rank_run
    for rep in reports:
        assert rep["dirs"] == ["latest", "step-00000002", "step-00000003"]  # keep=2 pruned step 1
        assert rep["extra"] == {"config_hash": "h1", "pos": 3, "step": 3}
        assert rep["rng_restored"], f"rank {rep['rank']}: RNG state not restored"
    # the async saves hold the values at save time, not those of the step that followed
    assert_same(torch.load(out / "expected-3.pt"), torch.load(out / "loaded-3.pt"))


def test_two_ranks_skip_a_damaged_newest_together(two_rank_run):
    _, out, reports = two_rank_run
    for rep in reports:
        assert rep["extra2"]["step"] == 2
        warnings = [line for line in rep["log"] if line.startswith("warning:")]
        assert len(warnings) == 1 and "step-00000003" in warnings[0], rep["log"]
    assert_same(torch.load(out / "expected-2.pt"), torch.load(out / "fallback-2.pt"))


def test_checkpoint_of_two_ranks_loads_in_one_process(two_rank_run, tmp_path):
    ckdir, out, _ = two_rank_run
    copy = tmp_path / "ck"
    shutil.copytree(ckdir, copy)
    shutil.rmtree(copy / "step-00000003")  # damaged by the fallback test; step 2 is the newest
    lines = []
    model = make_model(3)
    optim = make_optim(model)
    ck = Checkpointer(str(copy), 2, async_save=False, rank=0, world_size=1, log=lines.append)
    extra = ck.load_latest({"model": model, "optim": optim}, config_hash="h1")
    assert extra == {"config_hash": "h1", "pos": 2, "step": 2}
    assert_same(torch.load(out / "expected-2.pt"), full_state(model, optim))
    assert any("RNG streams are re-derived" in line for line in lines), lines


# -- one process: fallbacks, pointer, pruning, config hash


def saved_run(directory, steps, keep=3, async_save=False):
    """A model trained and saved at each of `steps`; full states by step."""
    model, states = make_model(0), {}
    optim = make_optim(model)
    ck = Checkpointer(str(directory), keep, async_save=async_save, rank=0, world_size=1)
    for step in steps:
        train_step(model, optim, step)
        written(ck)  # a save while the last one is still being written would be skipped
        ck.save(step, {"model": model, "optim": optim}, {"config_hash": "h", "pos": step})
        states[step] = full_state(model, optim)
    ck.wait()
    return states


def written(ck, timeout=60.0):
    """Until the pending async write (if any) is on disk; its commit still waits for save/wait."""
    deadline = time.monotonic() + timeout
    while ck._pending is not None and ck._pending.future is not None and not ck._pending.future.done():
        assert time.monotonic() < deadline, "async write not done"
        time.sleep(0.01)


def load(directory, config_hash="h"):
    lines = []
    model = make_model(9)
    optim = make_optim(model)
    ck = Checkpointer(str(directory), 3, async_save=False, rank=0, world_size=1, log=lines.append)
    extra = ck.load_latest({"model": model, "optim": optim}, config_hash=config_hash)
    return extra, full_state(model, optim), lines


def truncate_metadata(d):
    (d / ".metadata").write_bytes((d / ".metadata").read_bytes()[:40])


def remove_data_file(d):
    next(d.glob("*.distcp")).unlink()


def garble_data_file(d):  # same size: only DCP's own reading can notice
    f = next(d.glob("*.distcp"))
    f.write_bytes(b"\xff" * f.stat().st_size)


def garble_manifest(d):
    (d / "cordee.json").write_text("{")


def garble_rng(d):
    f = d / "rng-00000.pt"
    f.write_bytes(b"\0" * f.stat().st_size)


DAMAGES = [truncate_metadata, remove_data_file, garble_data_file, garble_manifest, garble_rng]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_newest_falls_back_with_a_warning(tmp_path, damage):
    states = saved_run(tmp_path, [1, 2])
    damage(tmp_path / "step-00000002")
    extra, state, lines = load(tmp_path)
    assert extra["step"] == 1
    assert_same(states[1], state)
    warning = [line for line in lines if line.startswith("warning:")]
    assert len(warning) == 1 and "step-00000002" in warning[0] and "falling back" in warning[0], lines


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
    saved_run(tmp_path, [1, 2])
    for d in ("step-00000001", "step-00000002"):
        truncate_metadata(tmp_path / d)
    with pytest.raises(CordeeError, match="none of the 2 checkpoints loads"):
        load(tmp_path)


def test_async_round_trip_bit_identical_and_keep_k(tmp_path):
    states = saved_run(tmp_path, [10, 20, 30, 40], keep=2, async_save=True)
    assert sorted(os.listdir(tmp_path)) == ["latest", "step-00000030", "step-00000040"]
    assert (tmp_path / "latest").read_text() == "step-00000040\n"
    assert latest_step(tmp_path) == 40
    extra, state, _ = load(tmp_path)
    assert extra == {"config_hash": "h", "pos": 40, "step": 40}
    assert_same(states[40], state)


def test_an_async_save_while_the_last_is_still_written_is_skipped(tmp_path):
    """Waiting for the write in flight would block training for the rest of it: the save is
    skipped with a warning, and the pending one still commits."""
    import concurrent.futures

    lines = []
    model = make_model(0)
    optim = make_optim(model)
    ck = Checkpointer(str(tmp_path), 3, async_save=True, rank=0, world_size=1, log=lines.append)
    train_step(model, optim, 10)
    assert ck.save(10, {"model": model, "optim": optim}, {"config_hash": "h", "pos": 10})
    written(ck)
    real, ck._pending.future = ck._pending.future, concurrent.futures.Future()  # a write in flight
    train_step(model, optim, 20)
    assert ck.save(20, {"model": model, "optim": optim}, {"config_hash": "h", "pos": 20}) is False
    assert any("step-00000020 skipped" in line and "step-00000010" in line for line in lines), lines
    ck._pending.future = real
    ck.wait()
    assert latest_step(tmp_path) == 10 and not (tmp_path / ".tmp-step-00000020").exists()


def test_empty_directory_loads_nothing_and_a_foreign_config_is_refused(tmp_path):
    assert load(tmp_path / "none")[0] is None
    assert latest_step(tmp_path / "none") is None
    saved_run(tmp_path, [1])
    with pytest.raises(InputError, match="config hash 'h', this run's is 'other'"):
        load(tmp_path, config_hash="other")


def test_latest_is_replaced_atomically_while_saving(tmp_path):
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add((tmp_path / "latest").read_text())
            except FileNotFoundError:
                pass

    t = threading.Thread(target=reader)
    t.start()
    try:
        saved_run(tmp_path, range(1, 9), keep=2)
    finally:
        stop.set()
        t.join()
    assert seen and seen <= {f"step-{s:08d}\n" for s in range(1, 9)}, seen  # never a partial name


def test_resume_before_an_abandoned_newer_step_replaces_it(tmp_path):
    """Step 3 damaged -> resume from 2 -> the next save of step 3 replaces the damaged one, and
    `latest` wins over newer directories of the abandoned timeline."""
    saved_run(tmp_path, [1, 2, 3])
    truncate_metadata(tmp_path / "step-00000003")
    model = make_model(0)
    optim = make_optim(model)
    ck = Checkpointer(str(tmp_path), 2, async_save=True, rank=0, world_size=1)
    assert ck.load_latest({"model": model, "optim": optim})["step"] == 2
    train_step(model, optim, 3)
    ck.save(3, {"model": model, "optim": optim}, {"config_hash": "h"})
    ck.wait()
    assert sorted(os.listdir(tmp_path)) == ["latest", "step-00000002", "step-00000003"]
    extra, state, lines = load(tmp_path)
    assert extra["step"] == 3 and not [x for x in lines if x.startswith("warning:")]
    assert_same(full_state(model, optim), state)


# -- SIGKILL during a save

KILLED = MODEL + textwrap.dedent("""
    import os, signal, sys, time
    from cordee.train.checkpoint import Checkpointer
    ckdir, kill_at = sys.argv[1], sys.argv[2]
    model = torch.nn.Linear(64, 64)
    optim = make_optim(model)
    ck = Checkpointer(ckdir, 2, async_save=False, rank=0, world_size=1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ck.save(1, {"model": model, "optim": optim}, {"config_hash": "h"})
    with torch.no_grad():
        model.weight.fill_(2.0)

    def stall(fd):  # DCP syncs each data file once written: hold step 2's save right there
        print("writing", flush=True)
        time.sleep(600)

    def dying(real, name):
        def call(src, dst, *a, **k):
            if name in os.fspath(dst):  # the commit point under test: die instead
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *a, **k)
        return call

    if kill_at == "writing":
        os.fsync = stall
    elif kill_at == "rename":
        os.rename = dying(os.rename, "step-00000002")
    elif kill_at == "latest":
        os.replace = dying(os.replace, "latest")
    print("saving", flush=True)
    ck.save(2, {"model": model, "optim": optim}, {"config_hash": "h"})
    print("saved", flush=True)
""")


def load_linear(directory):
    model = torch.nn.Linear(64, 64)
    optim = make_optim(model)
    ck = Checkpointer(str(directory), 2, async_save=False, rank=0, world_size=1)
    extra = ck.load_latest({"model": model, "optim": optim}, config_hash="h")
    return extra, model, optim, ck


@pytest.mark.parametrize("kill_at", ["writing", "rename", "latest"])
def test_sigkill_during_a_save_leaves_the_previous_checkpoint_used(tmp_path, kill_at):
    """SIGKILL from outside while step 2's data is being written, or at the two commit points
    (the rename of the step directory, the replacement of `latest`) from inside."""
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    ckdir = tmp_path / "ck"
    argv = [sys.executable, str(script), str(ckdir), kill_at]
    p = subprocess.Popen(argv, env=clean_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "saving\n"
        if kill_at == "writing":
            assert p.stdout.readline() == "writing\n"
            assert (ckdir / ".tmp-step-00000002" / "__0_0.distcp").stat().st_size > 0
            p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=60) == -signal.SIGKILL
    finally:
        p.kill()
        p.wait()
    assert (ckdir / "latest").read_text() == "step-00000001\n"
    if kill_at != "latest":
        assert not (ckdir / "step-00000002").exists() and (ckdir / ".tmp-step-00000002").is_dir()
    extra, model, optim, ck = load_linear(ckdir)
    assert extra["step"] == 1 and bool((model.weight == 1.0).all())
    # the run goes on: saving step 2 again replaces whatever the crash left
    with torch.no_grad():
        model.weight.fill_(3.0)
    ck.save(2, {"model": model, "optim": optim}, {"config_hash": "h"})
    assert sorted(os.listdir(ckdir)) == ["latest", "step-00000001", "step-00000002"]
    extra, model, _, _ = load_linear(ckdir)
    assert extra["step"] == 2 and bool((model.weight == 3.0).all())


# -- stop signals


def test_stop_request_records_the_first_signal_and_restores_handlers():
    before = signal.getsignal(signal.SIGUSR2)
    with StopRequest().install(["SIGUSR1", "usr2"]) as stop:
        assert not stop.requested and stop.signal_name is None
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.requested and stop.signal_name == "SIGUSR2" and stop.signum == signal.SIGUSR2
    assert signal.getsignal(signal.SIGUSR2) == before


def test_stop_signal_in_a_child_exits_with_exit_stopped():
    code = textwrap.dedent("""
        import sys, time
        from cordee.train.signals import EXIT_STOPPED, StopRequest
        stop = StopRequest().install(["SIGTERM"])
        print("ready", flush=True)
        while not stop.requested:
            time.sleep(0.01)  # a training step
        print(stop.signal_name, flush=True)
        sys.exit(EXIT_STOPPED)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], env=clean_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == EXIT_STOPPED == 75
        assert p.stdout.read() == "SIGTERM\n"
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("name", ["SIGKILL", "STOP", "SIGFOO", "", "9", "SIGUSR1\n"])
def test_unknown_or_uncatchable_signal_names_are_refused(name):
    with pytest.raises(InputError, match="stop signal"):
        parse_signal(name)
    with pytest.raises(InputError):
        StopRequest().install(["SIGUSR1", name])
