"""Reading a saved checkpoint in one process, whatever world size saved it (for `cordee export`):
the step directory a path names, checked against its manifest; the model config the run trained;
the model tensors DCP's metadata lists (name, full shape, dtype); and full tensors loaded from the
pieces every rank saved.

Kept apart from export.py, which writes the Hugging Face directory: this is the checkpoint side, built
on the directory layout (ckptlayout) and checkpoint.py's mapping of DCP's errors. torch is imported
inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import os
import typing
import warnings
from pathlib import Path

from cordee.errors import InputError, one_line, shown
from cordee.train.ckptlayout import MANIFEST, STEP_DIR, check_files, load_order, read_manifest


def resolve_checkpoint(checkpoint: str) -> tuple[Path, dict]:
    """The step directory to export and its checked manifest (every file there, full size)."""
    if not checkpoint or "\0" in checkpoint:
        raise InputError(f"checkpoint {shown(checkpoint)}: not a directory name")
    path = Path(checkpoint)
    if not path.is_dir():
        what = "no such directory" if not os.path.lexists(path) else "not a directory"
        raise InputError(f"checkpoint {shown(checkpoint)}: {what} (a checkpoint root or a step-N directory)")
    if not (path / MANIFEST).exists() and not STEP_DIR.fullmatch(path.name):
        candidates, _ = load_order(path)
        if not candidates:
            raise InputError(
                f"checkpoint {shown(checkpoint)}: holds no {MANIFEST} and no step-N directories (not a "
                "cordee checkpoint)"
            )
        path = candidates[0][1]  # the step `latest` names, else the newest
    try:
        manifest = read_manifest(path)
        check_files(path, manifest["files"])
    except ValueError as e:
        raise InputError(f"{_named(path)}: damaged or incomplete: {e}") from None
    return path, manifest


def checkpoint_model_config(step_dir: Path, manifest: dict):
    """The ModelConfig the run trained, from the manifest's extra (checked against the key rules:
    a hand-edited manifest must not make the export loop for ever)."""
    from cordee.train.config import ModelConfig

    raw = manifest["extra"].get("model")
    where = f"{_named(step_dir)}: {MANIFEST}"
    if not isinstance(raw, dict):
        raise InputError(f"{where} records no model config (saved by a cordee without `export`)")
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        keys = ", ".join(map(shown, unknown[:5]))
        raise InputError(f"{where}: unknown model keys {keys} (written by another cordee version)")
    hints = typing.get_type_hints(ModelConfig)
    values = {}
    for name, value in raw.items():
        rules, kind = fields[name].metadata, hints[name]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind in (bool, str):
            ok = isinstance(value, kind)
        else:  # a JSON number: an int is a float too, a bool is neither
            ok = number and (kind is float or isinstance(value, int))
        if not ok:
            raise InputError(f"{where}: model.{name}={shown(value)} is not {kind.__name__}")
        if "choices" in rules and value not in rules["choices"]:
            allowed = ", ".join(rules["choices"])
            raise InputError(f"{where}: model.{name}={shown(value)} is not one of {allowed}")
        lo, hi = rules.get("lo", rules.get("gt")), rules.get("hi", rules.get("lt"))
        if number and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            raise InputError(f"{where}: model.{name}={value} is out of range")
        values[name] = value
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: model config: {one_line(str(e))}") from None


def _named(step_dir: Path) -> str:
    return f"checkpoint {shown(str(step_dir))}"


def model_tensors(step_dir: Path, cfg) -> list[tuple]:
    """(cordee name, Hugging Face name, shape, saved torch dtype) of every tensor to export, in the
    model's order."""
    from cordee.train.hfconfig import hf_names

    metadata = _read_metadata(step_dir)
    saved = {k.removeprefix("model."): md for k, md in metadata.items() if k.startswith("model.")}
    layers = {k.split(".")[1] for k in saved if k.startswith("layers.")}
    if len(layers) != cfg.n_layers:  # before hf_names, which lists n_layers blocks
        raise InputError(
            f"{_named(step_dir)}: {len(layers)} blocks saved, its model config says {cfg.n_layers}"
        )
    names = hf_names(cfg)
    tensors = []
    for name, hf_name in names.items():
        md = saved.get(name)
        if md is None or not hasattr(md, "size"):
            raise InputError(f"{_named(step_dir)}: no tensor model.{name} (for {hf_name})")
        tensors.append((name, hf_name, tuple(md.size), md.properties.dtype))
    tied = {"output.weight"} if getattr(cfg, "tie_embeddings", False) else set()
    extra = sorted(set(saved) - set(names) - tied)
    if extra:
        raise InputError(
            f"{_named(step_dir)}: model tensors without a Hugging Face name: "
            f"{', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"
        )
    return tensors


def _read_metadata(step_dir: Path) -> dict:
    from torch.distributed.checkpoint import FileSystemReader

    from cordee.train.checkpoint import _errors, _reason

    try:
        return dict(FileSystemReader(str(step_dir)).read_metadata().state_dict_metadata)
    except _errors() as e:
        raise InputError(f"{_named(step_dir)}: DCP metadata unreadable: {_reason(e)}") from None


def load_tensors(step_dir: Path, wanted: list[tuple]) -> dict:
    """Full tensors `wanted` ((cordee name, shape, dtype) each) from the checkpoint, in this
    process: DCP gathers each from the pieces every rank saved, reading only their byte ranges."""
    import inspect

    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    from cordee.train.checkpoint import _errors, _reason

    state = {"model": {name: torch.empty(size, dtype=dtype) for name, size, dtype in wanted}}
    kwargs = {"no_dist": True} if "no_dist" in inspect.signature(dcp.load).parameters else {}
    try:
        with warnings.catch_warnings():  # DCP warns that it assumes a single process: it is one
            warnings.filterwarnings("ignore", message="torch.distributed is (disabled, )?unavailable")
            dcp.load(state, storage_reader=FileSystemReader(str(step_dir)), **kwargs)
    except _errors() as e:
        raise InputError(f"{_named(step_dir)}: cannot read its tensors: {_reason(e)}") from None
    return state["model"]
