"""Checkpoints with torch.distributed.checkpoint (DCP), saved asynchronously, committed by rename.

Layout of the checkpoint directory DIR:

    DIR/step-00000123/        DCP files (.metadata, __<rank>_0.distcp), rng-<rank>.pt per rank, and
                              cordee.json (step, extra, world size, time, file sizes, "complete"),
                              the last file written before the rename
    DIR/latest                "step-00000123\\n", replaced atomically after each complete save
    DIR/.tmp-step-00000124/   a save in progress, renamed to step-00000124 once every rank wrote

A crash at any point leaves the previous checkpoint and `latest` as they were: a save becomes
visible only through the rename, which happens after every rank's future completed and the
ranks agreed on it in a collective at a step boundary (wait(), or the next save()), never from
DCP's background thread, which would race the training collectives. DCP's own collectives run on
a separate gloo group (async_save needs a CPU backend, and a second communicator keeps them apart
from the trainer's), as torchtitan does.

Model and optimizer state go through `torch.distributed.checkpoint.state_dict.get_state_dict` /
`set_state_dict`, so plain modules, DDP and FSDP2 save the same keys and a checkpoint loads at
another world size (DCP reshards on load). RNG states are per rank: restored when the world size
matches, otherwise the caller's seeding stands and the log says so.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from cordee.errors import CordeeError, InputError, shown
from cordee.fileio import write_atomic
from cordee.train.ckptlayout import (
    LATEST,
    MANIFEST,
    SCHEMA,
    TMP_DIR,
    TMP_LATEST,
    TMP_PREFIX,
    _step_dirs,
    check_files,
    load_order,
    read_manifest,
    step_dir_name,
)

WRITER_THREADS = max(1, min(8, os.cpu_count() or 1))


@dataclass
class _Pending:
    step: int
    tmp: Path
    future: object | None  # DCP's Future for an async save
    manifest: dict
    started: float
    written: float = 0.0  # when the data was on disk (set by DCP's thread through the future)


class Checkpointer:
    """Saves and loads training state in `directory`; every rank constructs one, in the same order
    relative to other process groups (it creates a gloo group when torch.distributed is up).

    `log` is a logging.Logger-like object (info/warning) or a callable taking one line.
    `timeout_s` bounds every collective of a save or load and the wait for an async write.
    Call close() (or at least wait()) before the process exits and before destroying the
    process group."""

    def __init__(
        self, directory: str, keep: int, *, async_save: bool, rank: int, world_size: int, log=None,
        timeout_s: float = 1800.0,
    ) -> None:  # fmt: skip
        import torch.distributed as dist

        if keep < 1:
            raise InputError(f"checkpoint.keep={keep}: must be >= 1")
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise InputError(f"checkpoint.dir={shown(directory)}: exists and is not a directory")
        self.keep, self.async_save, self.rank, self.world_size = keep, async_save, rank, world_size
        self.timeout_s = timeout_s
        self._info, self._warn = _log_functions(log)
        self._pending: _Pending | None = None
        self._staged = None  # the host copy of the state for async saves
        self._group = None
        if dist.is_available() and dist.is_initialized():
            if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
                raise CordeeError(
                    f"Checkpointer: rank {rank}/{world_size} given, the process group says "
                    f"{dist.get_rank()}/{dist.get_world_size()}"
                )
            self._group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
        elif world_size != 1:
            raise CordeeError(f"Checkpointer: world_size={world_size} without torch.distributed initialized")
        else:  # DCP warns on every single-process save and load, also from async_save's thread
            warnings.filterwarnings("ignore", message="torch.distributed is (disabled, )?unavailable")

    # -- collectives (on the checkpoint group; no-ops in a single process)
    def _agree_max(self, code: int) -> int:
        """The largest of every rank's `code` (0 = fine): one decision for all ranks."""
        if self._group is None:
            return code
        import torch
        import torch.distributed as dist

        t = torch.tensor([code], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._group)
        return int(t.item())

    # -- save
    def save(self, step: int, app_state: dict, extra: dict, *, sync: bool = False) -> bool:
        """Save `app_state` ({"model": module, "optim": optimizer (optional)}) and `extra` (JSON)
        as step `step`. Async (when enabled and not `sync`): returns once the state is staged in
        host memory (copied: the optimizer may change the parameters at once); the commit
        happens in wait() or the next save(). An async save while the previous one is still being
        written is skipped with a warning (False). Every rank calls it at the same step."""
        import torch.distributed.checkpoint as dcp

        name = step_dir_name(step)
        if self.async_save and not sync and self._pending is not None:
            # Waiting for a write still in flight would block training for the rest of it: skip
            # this save instead (every rank agrees, a rank's write may end sooner than another's).
            busy = self._pending.future is not None and not self._pending.future.done()
            if self._agree_max(int(busy)):
                self._warn(
                    f"checkpoint {name} skipped: {step_dir_name(self._pending.step)} is still being "
                    "written (checkpoint.interval is shorter than a write)"
                )
                return False
        self.wait()
        try:
            extra_json = json.loads(json.dumps(extra))
        except (TypeError, ValueError) as e:
            raise CordeeError(f"checkpoint {name}: extra is not JSON-serializable: {e}") from None
        tmp = self.dir / (TMP_PREFIX + name)
        code = 0
        if self.rank == 0:
            try:  # a crashed save of the same step may have left files DCP would mix with ours
                self.dir.mkdir(parents=True, exist_ok=True)
                _remove_tree(tmp)
                tmp.mkdir()
            except OSError as e:
                self._warn(f"checkpoint {name}: cannot create {tmp}: {e.strerror or e}")
                code = 1
        if self._agree_max(code):
            raise CordeeError(f"checkpoint {name}: cannot create {tmp} (see rank 0's log)")
        try:
            _write_rng(tmp / f"rng-{self.rank:05d}.pt")
        except OSError as e:
            self._warn(f"checkpoint {name}: cannot write the RNG state: {e.strerror or e}")
            code = 1
        if self._agree_max(code):
            raise CordeeError(f"checkpoint {name}: cannot write RNG states into {tmp} (see the log)")
        state = _state_dict(app_state)
        manifest = {
            "schema": SCHEMA, "step": step, "world_size": self.world_size, "extra": extra_json,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }  # fmt: skip
        started = time.monotonic()
        kwargs = {"checkpoint_id": str(tmp), "process_group": self._group}
        if self.async_save and not sync:
            try:  # our own host copy; DCP writes it in a thread
                staged, writer = self._stage(state), _writer_of_staged(str(tmp))
                kwargs.update(storage_writer=writer, **self._no_dist(dcp.async_save))
                future = dcp.async_save(staged, **kwargs)
            except _errors() as e:
                raise CordeeError(f"checkpoint {name}: staging failed: {_reason(e)}") from None
            self._pending = pending = _Pending(step, tmp, future, manifest, started)
            future.add_done_callback(lambda _: setattr(pending, "written", time.monotonic()))
            return True
        try:
            dcp.save(state, **kwargs, **self._no_dist(dcp.save))
        except _errors() as e:  # DCP gathers every rank's write errors and raises them on all ranks
            raise CordeeError(f"checkpoint {name}: writing {tmp} failed: {_reason(e)}") from None
        self._commit(_Pending(step, tmp, None, manifest, started))
        return True

    def prepare(self, app_state: dict) -> None:
        """Allocate the host copy async saves write from (pinned on GPUs: seconds for a large
        model) now, once the optimizer state exists, instead of inside the first save's step."""
        if self.async_save and self._staged is None:
            import torch
            from torch.distributed._state_dict_utils import _create_cpu_state_dict

            self._staged = _create_cpu_state_dict(
                _state_dict(app_state), pin_memory=torch.cuda.is_available()
            )

    def wait(self) -> None:
        """Finish a pending async save: every rank waits for its write, then rank 0 commits."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._commit(pending)

    def close(self) -> None:
        """wait(), then free the host copy that async saves keep between saves."""
        try:
            self.wait()
        finally:
            self._staged = None

    def _stage(self, state: dict) -> dict:
        """A host copy of `state` for an async save, complete when this returns (the optimizer
        may change the parameters at once). The copy is allocated once, pinned on GPUs, and
        refilled at each save, as torchtitan does: allocating and pinning the whole state anew
        each time costs seconds."""
        import torch
        from torch.distributed._state_dict_utils import _copy_state_dict, _create_cpu_state_dict

        gpu = torch.cuda.is_available()
        for attempt in (1, 2):
            if self._staged is None:
                self._staged = _create_cpu_state_dict(state, pin_memory=gpu)
            try:
                staged = _copy_state_dict(state, self._staged, non_blocking=gpu)
                break
            except (KeyError, TypeError, ValueError, RuntimeError):
                if attempt == 2:  # not the structure of the last save's (e.g. new optimizer state)
                    raise
                self._staged = None
        if gpu:
            torch.cuda.synchronize()
        return staged

    def _commit(self, p: _Pending) -> None:
        name = step_dir_name(p.step)
        code, reason = 0, ""
        if p.future is not None:
            try:
                p.future.result(timeout=self.timeout_s)
            except _errors() as e:
                code, reason = 1, _reason(e)
        if self._agree_max(code):  # every rank's files are written (or someone failed)
            raise CordeeError(f"checkpoint {name}: writing {p.tmp} failed: {reason or 'on another rank'}")
        if self.rank == 0:
            try:
                self._rename_into_place(p)
            except OSError as e:
                code, reason = 1, f"{e.filename or p.tmp}: {e.strerror or e}"
        if self._agree_max(code):
            raise CordeeError(f"checkpoint {name}: commit failed: {reason or 'on rank 0'}")
        mode = "async" if p.future is not None else "sync"
        seconds = (p.written or time.monotonic()) - p.started
        self._info(f"checkpoint {self.dir / name} saved ({mode}, written in {seconds:.1f} s)")

    def _rename_into_place(self, p: _Pending) -> None:
        files = {e.name: e.stat().st_size for e in os.scandir(p.tmp) if e.is_file()}
        write_atomic(p.tmp / MANIFEST, json.dumps({**p.manifest, "files": files, "complete": True}, indent=1))
        final = self.dir / step_dir_name(p.step)
        _remove_tree(final)  # an older save of this step, abandoned by a fallback on resume
        os.rename(p.tmp, final)
        write_atomic(self.dir / LATEST, final.name + "\n")
        try:
            self._prune(p.step)
        except OSError as e:  # the checkpoint is committed; a failed clean-up only costs space
            self._warn(f"checkpoint: cannot prune {self.dir}: {e.strerror or e}")

    def _prune(self, step: int) -> None:
        """Keep the newest `keep` step directories up to `step`; remove newer ones (an abandoned
        timeline), stale .tmp-step-* directories of crashed saves and temporary files of `latest`.
        Rank 0 only, names matching the patterns only, never a symlink."""
        kept = 0
        for s, path in _step_dirs(self.dir):
            if s <= step and kept < self.keep:
                kept += 1
                continue
            self._remove(path)
        for e in os.scandir(self.dir):
            if TMP_DIR.fullmatch(e.name) and e.is_dir(follow_symlinks=False):
                self._remove(Path(e.path))
            elif TMP_LATEST.fullmatch(e.name) and e.is_file(follow_symlinks=False):
                os.unlink(e.path)

    def _remove(self, path: Path) -> None:
        try:
            _remove_tree(path)
        except OSError as e:
            self._warn(f"checkpoint: cannot remove {path}: {e.strerror or e}")

    # -- load
    def load_latest(self, app_state: dict, *, config_hash: str | None = None) -> dict | None:
        """Load the newest loadable checkpoint into `app_state`; its `extra` (with "step") or None
        when DIR holds no checkpoint. A damaged one is skipped with a warning naming it and why.
        InputError if its extra's "config_hash" differs from `config_hash`; CordeeError if
        checkpoints exist and none loads. Every rank calls it."""
        self.wait()
        candidates, note = load_order(self.dir)
        if note:
            self._warn(note)
        if not self._agree_max(len(candidates)):
            return None
        state = _state_dict(app_state)
        failures = []
        for step, path in candidates:
            code, reason, manifest = 0, "", None
            try:
                manifest = read_manifest(path)
                theirs = manifest["extra"].get("config_hash")
                if config_hash is not None and theirs != config_hash:
                    code, reason = 2, f"config hash {shown(theirs)}, this run's is {shown(config_hash)}"
                else:
                    check_files(path, manifest["files"])
            except ValueError as e:
                code, reason = 1, str(e)
            code = self._agree_max(code)
            if code == 2:
                raise InputError(
                    f"{path}: written by a run of another configuration ({reason or 'on another rank'}): "
                    "model shape, data or seed differ; resume with the same config or use another "
                    "checkpoint.dir"
                )
            if code == 0:
                same_world = manifest["world_size"] == self.world_size
                reason, rng = self._load_into(path, state, app_state, same_world)
                if not self._agree_max(1 if reason else 0):
                    self._restore_rng(path, manifest, rng)
                    self._info(f"resumed from checkpoint {path} (step {step})")
                    return {**manifest["extra"], "step": manifest["step"]}
            reason = reason or "failed on another rank"
            failures.append(f"{path.name}: {reason}")
            self._warn(f"checkpoint {path} cannot be loaded ({reason}); falling back to the previous one")
        raise CordeeError(
            f"{self.dir}: none of the {len(candidates)} checkpoints loads ({'; '.join(failures)}); "
            "move them away to start from step 0"
        )

    def _load_into(self, path: Path, state: dict, app_state: dict, with_rng: bool) -> tuple[str, dict]:
        """DCP load of `path` into `state`, then into the model and optimizer, and this rank's
        RNG states when `with_rng`: ('', states) or (the reason, {})."""
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        try:
            rng = torch.load(path / f"rng-{self.rank:05d}.pt", weights_only=True) if with_rng else {}
            dcp.load(state, checkpoint_id=str(path), process_group=self._group, **self._no_dist(dcp.load))
            optim = app_state.get("optim")
            set_state_dict(
                app_state["model"], optim if optim is not None else [],
                model_state_dict=state["model"], optim_state_dict=state.get("optim", {}),
            )  # fmt: skip
        except _errors() as e:  # a damaged file surfaces as any of DCP's or torch.load's errors
            return _reason(e), {}
        return "", rng

    def _no_dist(self, function) -> dict:
        """no_dist=True in a single process without torch.distributed (DCP would warn that it
        assumes so), where the torch version's `function` takes it (async_save of 2.4 does not)."""
        import inspect

        if self._group is not None or "no_dist" not in inspect.signature(function).parameters:
            return {}
        return {"no_dist": True}

    def _restore_rng(self, path: Path, manifest: dict, states: dict) -> None:
        import torch

        if manifest["world_size"] != self.world_size:
            if self.rank == 0:
                self._info(
                    f"checkpoint {path.name} was written by {manifest['world_size']} ranks, this run has "
                    f"{self.world_size}: RNG streams are re-derived from the seed, not restored "
                    "(the model has no dropout and the data order does not depend on them)"
                )
            return
        torch.set_rng_state(states["cpu"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state(states["cuda"])


def _state_dict(app_state: dict) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    unknown = set(app_state) - {"model", "optim"}
    if "model" not in app_state or unknown:
        keys = sorted(app_state)
        raise CordeeError(f"checkpoint app_state keys {keys}: expected 'model' and optionally 'optim'")
    optim = app_state.get("optim")
    model_sd, optim_sd = get_state_dict(app_state["model"], optim if optim is not None else [])
    return {"model": model_sd, "optim": optim_sd} if optim is not None else {"model": model_sd}


def _writer_of_staged(path: str):
    """DCP's file writer that writes a state dict as given: the state is already a host copy
    (Checkpointer._stage), which DCP would otherwise copy once more."""
    from torch.distributed.checkpoint import FileSystemWriter

    class StagedWriter(FileSystemWriter):
        def stage(self, state_dict):
            return state_dict

    # several writer threads: one thread writes a 15 GB state at a fraction of what the disk takes
    return StagedWriter(path, thread_count=WRITER_THREADS)


def _write_rng(path: Path) -> None:
    import torch

    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    buf = io.BytesIO()
    torch.save(states, buf)
    write_atomic(path, buf.getvalue())


def _remove_tree(path: Path) -> None:
    if path.is_symlink():
        raise OSError(f"{path} is a symlink, not removed")
    if path.exists():
        shutil.rmtree(path)


def _errors():
    """What a failed DCP call raises: CheckpointException derives from BaseException."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (Exception, CheckpointException)


def _reason(e: BaseException) -> str:
    """One short line: DCP's CheckpointException is a traceback per rank; name the first cause."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        rank, (cause, _) = min(failures.items(), key=lambda kv: kv[0])
        e = cause
        prefix = f"rank {rank}: "
    else:
        prefix = ""
    text = prefix + (" ".join(f"{type(e).__name__}: {e}".split()))
    return text if len(text) <= 300 else text[:300] + "..."


def _log_functions(log):
    if log is None:
        return (lambda msg: None), (lambda msg: None)
    if hasattr(log, "warning") and hasattr(log, "info"):
        return log.info, log.warning
    return log, (lambda msg: log(f"warning: {msg}"))
