"""`cordee export`: a training checkpoint -> a Hugging Face model directory that `transformers`
loads (`AutoModelForCausalLM.from_pretrained`).

The checkpoint is read in ONE process whatever world size saved it: DCP's metadata names every
tensor with its full shape, and a DCP load of a state dict of full-size tensors gathers each one
from the ranks' files. Only model tensors are read, one output shard's worth at a time, so memory
holds at most one shard (never the optimizer state, never the whole model of a large run). The
reading is cordee.train.ckptread; this module plans the shards and writes the directory.

Output, as `save_pretrained` writes it: `model.safetensors`, or `model-0000i-of-0000n.safetensors`
shards with `model.safetensors.index.json` when the tensors exceed --max-shard-size; config.json
(the source model's config.json as base when the run started from one, the shape from the
checkpoint's model config); the source's generation config and tokenizer files, copied. The
directory is written under a temporary name beside OUT and renamed: it appears complete or not
at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cordee.errors import CordeeError, InputError, one_line, shown
from cordee.train.ckptread import checkpoint_model_config, load_tensors, model_tensors, resolve_checkpoint

SCHEMA = "cordee.export/1"
DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
DEFAULT_SHARD_BYTES = 5 * 10**9  # save_pretrained's default, "5GB"
MAX_SHARD_BYTES = 1 << 50
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# What the source model directory holds besides weights and config.json, copied as is (the
# tokenizer files transformers' save_pretrained of a tokenizer writes, and the generation config)
SOURCE_FILES = (
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
    "chat_template.json",
)  # fmt: skip
MAX_COPY_BYTES = 1 << 30  # a tokenizer.json is tens of MB; nothing in the list above comes near
_SIZE = re.compile(r"([0-9]{1,16})\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?", re.ASCII)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from "5GB" (10^9, as transformers' max_shard_size), "500MiB" (2^20), "100000"."""
    m = _SIZE.fullmatch(str(text).strip().upper())
    value = int(m.group(1)) * _UNITS[m.group(2) or "B"] if m else 0
    if not 1 <= value <= MAX_SHARD_BYTES:
        raise InputError(f"--max-shard-size {shown(text)}: a size such as 5GB, 500MB or 2GiB (1 B to 1 PiB)")
    return value


def export(
    checkpoint: str,
    out: str,
    *,
    dtype: str = "auto",
    max_shard_size: int = DEFAULT_SHARD_BYTES,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Write the Hugging Face directory `out` from `checkpoint` (a step directory, or a checkpoint
    root: the step `latest` names). Returns the summary (schema cordee.export/1). `progress` is
    called with (bytes written, bytes in all) after each shard; `log` gets warnings (one line)."""
    started = time.monotonic()
    notes: list[str] = []  # warnings, shown once the export is done: an error stays the only line
    note = notes.append
    if dtype != "auto" and dtype not in DTYPES:
        raise InputError(f"--dtype {shown(dtype)}: one of auto, {', '.join(DTYPES)}")
    step_dir, manifest = resolve_checkpoint(checkpoint)
    cfg = checkpoint_model_config(step_dir, manifest)
    source = _source_dir(manifest, note)
    base = _source_config(source, note)
    out_path = _check_output(out, force, step_dir)
    tensors = model_tensors(step_dir, cfg)
    out_dtype = _output_dtype(dtype, base)
    shards = plan_shards(tensors, max_shard_size, _itemsize(out_dtype))
    total = sum(_numel(t[2]) for t in tensors) * _itemsize(out_dtype)
    parent = out_path.parent
    work = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=parent))
        names = _write_shards(step_dir, shards, work, out_dtype, total, progress)
        _write_config(work, cfg, base, out_dtype)
        copied = _copy_source_files(source, work)
        for entry in os.scandir(work):  # the safetensors writer makes its files 0600
            os.chmod(entry.path, 0o644)
        os.chmod(work, 0o755)  # mkdtemp made it 0700
        _move_into_place(work, out_path)
    except OSError as e:  # the output's file system: no room, no permission, read-only
        where = shown(e.filename) if e.filename else shown(str(out_path))
        raise CordeeError(f"export to {shown(out)}: {where}: {e.strerror or e}") from None
    finally:
        if work is not None and work.exists():
            shutil.rmtree(work, ignore_errors=True)
    for line in notes:
        (log or (lambda line: None))(line)
    return {
        "schema": SCHEMA, "checkpoint": os.path.abspath(step_dir), "step": manifest["step"],
        "world_size": manifest["world_size"], "output": str(out_path), "dtype": DTYPES_BY_TORCH[out_dtype],
        "files": names, "tensors": len(tensors), "bytes": total, "copied": copied,
        "hf_source": str(source) if source else None, "seconds": round(time.monotonic() - started, 3),
    }  # fmt: skip


DTYPES_BY_TORCH = {"bfloat16": "bf16", "float32": "fp32"}


def _source_dir(manifest: dict, note) -> Path | None:
    """The Hugging Face directory the run started from, if it recorded one and it is still there."""
    extra = manifest["extra"]
    source = extra.get("hf_source") or (extra.get("model") or {}).get("from_hf") or ""
    if not isinstance(source, str) or not source:
        return None
    if not os.path.isdir(source):
        note(f"source model {shown(source)} is gone: config.json from the checkpoint, no tokenizer files")
        return None
    return Path(source)


def _source_config(source: Path | None, note) -> dict | None:
    if source is None:
        return None
    if not (source / "config.json").exists():
        note(f"{shown(str(source / 'config.json'))} is missing: config.json from the checkpoint alone")
        return None
    from cordee.train.hfconfig import read_hf_config

    return read_hf_config(str(source))


def _check_output(out: str, force: bool, step_dir: Path) -> Path:
    if not out or "\0" in out:
        raise InputError(f"output {shown(out)}: not a directory name")
    path = Path(os.path.abspath(out))
    if os.path.lexists(path):
        if not force:
            raise InputError(f"output {shown(out)} exists (--force replaces it)")
        if path.is_symlink() or not path.is_dir():
            raise InputError(f"output {shown(out)} exists and is not a directory: not replaced")
        if step_dir.resolve().is_relative_to(path.resolve()):
            raise InputError(f"output {shown(out)} holds the checkpoint being exported: not replaced")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"output {shown(out)}: {shown(str(path.parent))} is not a directory")
    return path


def _output_dtype(dtype: str, base: dict | None) -> str:
    """A torch dtype name. auto: the source model's (config.json) when it is bf16 or fp32, else
    fp32: the checkpoint holds fp32 master weights, and fp32 loses nothing."""
    if dtype != "auto":
        return DTYPES[dtype]
    declared = (base or {}).get("dtype") or (base or {}).get("torch_dtype")
    return declared if declared in DTYPES_BY_TORCH else "float32"


def _itemsize(dtype_name: str) -> int:
    return {"bfloat16": 2, "float32": 4}[dtype_name]


def _numel(size: tuple[int, ...]) -> int:
    n = 1
    for d in size:
        n *= d
    return n


def plan_shards(tensors: list, max_bytes: int, itemsize: int) -> list[list]:
    """Consecutive tensors grouped into shards of at most `max_bytes` (a larger tensor alone),
    as save_pretrained does."""
    shards: list[list] = []
    used = 0
    for t in tensors:
        size = _numel(t[2]) * itemsize
        if not shards or used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(t)
        used += size
    return shards


def _shard_name(i: int, n: int) -> str:
    return SINGLE_FILE if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def _write_shards(step_dir: Path, shards: list, work: Path, dtype_name: str, total: int, progress) -> list:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    out_dtype = getattr(torch, dtype_name)
    weight_map, done, names = {}, 0, []
    for i, shard in enumerate(shards):
        loaded = load_tensors(step_dir, [(name, size, saved) for name, _, size, saved in shard])
        tensors = {hf: loaded[name].to(out_dtype).contiguous() for name, hf, *_ in shard}
        del loaded
        name = _shard_name(i, len(shards))
        try:
            save_file(tensors, str(work / name), metadata={"format": "pt"})
        except SafetensorError as e:  # an I/O error in its Rust writer: ENOSPC, EFBIG, EIO
            reason = one_line(str(e))[:200]
            raise CordeeError(f"export: writing {shown(str(work / name))} failed: {reason}") from None
        weight_map |= dict.fromkeys(tensors, name)
        names.append(name)
        done += sum(t.numel() * t.element_size() for t in tensors.values())
        if progress:
            progress(done, total)
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (work / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        names.append(INDEX_FILE)
    return names


def _write_config(work: Path, cfg, base: dict | None, dtype_name: str) -> None:
    from cordee.train.hfconfig import hf_config

    doc = hf_config(cfg, base)
    doc["dtype"] = dtype_name
    if "torch_dtype" in doc:  # transformers 4.x's name for it
        doc["torch_dtype"] = dtype_name
    (work / "config.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _copy_source_files(source: Path | None, work: Path) -> list[str]:
    """The tokenizer files and generation config of the source directory that exist as regular
    files (a FIFO would block the copy)."""
    copied = []
    for name in SOURCE_FILES if source else ():
        try:
            st = os.stat(source / name)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_COPY_BYTES:
            raise InputError(f"{shown(str(source / name))}: not a regular file of at most 1 GiB: not copied")
        shutil.copyfile(source / name, work / name)
        copied.append(name)
    return copied


def _move_into_place(work: Path, out: Path) -> None:
    """rename(2) onto `out`; an existing one (--force) is first renamed aside, then removed."""
    old = None
    if os.path.lexists(out):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old)  # onto the empty directory mkdtemp made
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
