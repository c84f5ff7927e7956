"""Load a Hugging Face checkpoint's safetensors into cordee's Transformer, plain or FSDP2-sharded.

Each rank reads only the rows of each tensor it keeps (`safe_open(...).get_slice(name)[a:b]`
reads those bytes of the memory-mapped file), so no rank ever holds the whole model: an 8B or 70B
model loads on ranks whose memory holds only their shard. Before anything is read, every tensor
the model needs must be in the files with its shape, and every tensor in the files must be one
the model has; each mismatch is one line naming the tensor, the file and both shapes.
"""

from __future__ import annotations

import os

from cordee.errors import InputError, shown
from cordee.fileio import read_json
from cordee.train.hfconfig import hf_names

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
# tensors a checkpoint may carry that are no weights (transformers 4 saved rotary tables)
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


class HFCheckpoint:
    """The safetensors files of a model directory, open (memory-mapped), with a map of tensor name
    -> file. `read_rows` is the one place bytes are read (a test counts them there)."""

    def __init__(self, model_dir: str) -> None:
        from safetensors import SafetensorError, safe_open

        self.model_dir = model_dir
        self.files: dict[str, object] = {}
        self.where: dict[str, str] = {}
        for name in self._file_names():
            path = os.path.join(model_dir, name)
            if not os.path.isfile(path):
                raise InputError(f"{self.named(name)}: safetensors file missing or not a regular file")
            try:
                handle = safe_open(path, framework="pt")
                keys = list(handle.keys())
            except (SafetensorError, OSError, ValueError) as e:
                reason = f"not a readable safetensors file ({_short(e)})"
                raise InputError(f"{self.named(name)}: {reason}") from None
            self.files[name] = handle
            for key in keys:
                if key in self.where:
                    raise InputError(f"{self.named(name)}: tensor {key} is also in {self.where[key]}")
                self.where[key] = name

    def _file_names(self) -> list[str]:
        index = os.path.join(self.model_dir, INDEX)
        if os.path.lexists(index):
            data = read_json(index, "safetensors index")
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise InputError(f"{shown(index)}: no weight_map of tensor name -> file name")
            names = sorted(set(weight_map.values()))
            for name in names:  # a file of this directory, not a path elsewhere
                if os.path.basename(name) != name or name in ("", ".", ".."):
                    raise InputError(f"{shown(index)}: weight_map names {shown(name)}, not a file name")
            return names
        if os.path.lexists(os.path.join(self.model_dir, SINGLE)):
            return [SINGLE]
        found = sorted(n for n in os.listdir(self.model_dir) if n.endswith(".safetensors"))
        if not found:
            raise InputError(f"model.from_hf {shown(self.model_dir)}: no *.safetensors files (nor {INDEX})")
        return found

    def named(self, file_name: str) -> str:
        """A file of the directory as messages name it: the file name whole, the directory cut."""
        return f"{file_name} in {shown(self.model_dir)}"

    def shape(self, name: str) -> list[int]:
        return list(self.files[self.where[name]].get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        return self.files[self.where[name]].get_slice(name).get_dtype()

    def read_rows(self, name: str, start: int | None = None, stop: int | None = None):
        """Rows start..stop of the tensor (all of it when start is None), as a torch tensor."""
        from safetensors import SafetensorError

        handle = self.files[self.where[name]]
        try:
            if start is None:
                return handle.get_tensor(name)
            return handle.get_slice(name)[start:stop]
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            reason = f"tensor {name} cannot be read ({_short(e)})"
            raise InputError(f"{self.named(self.where[name])}: {reason}") from None


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}"


def _row_range(tensor) -> tuple[int, int] | None:
    """This rank's rows [start, stop) of a DTensor sharded on dim 0 over each mesh dimension that
    shards it (FSDP2: Shard(0); HSDP: Replicate, Shard(0)); None for a replicated or plain tensor.
    Rows are split as torch.chunk does, which is what DTensor and FSDP2 use."""
    placements = getattr(tensor, "placements", None)
    if placements is None:
        return None
    start, stop = 0, tensor.shape[0] if tensor.ndim else 0
    sharded = False
    for mesh_dim, placement in enumerate(placements):
        if placement.is_replicate():
            continue
        if not placement.is_shard(0):
            raise InputError(f"cannot load Hugging Face weights into a tensor placed as {placement}")
        sharded = True
        parts = tensor.device_mesh.size(mesh_dim)
        coordinate = tensor.device_mesh.get_local_rank(mesh_dim)
        chunk = -(-(stop - start) // parts)
        start, stop = min(start + coordinate * chunk, stop), min(start + (coordinate + 1) * chunk, stop)
    return (start, stop) if sharded else None


def _targets(model) -> dict[str, object]:
    """cordee name -> parameter or buffer of the model (after any wrapping)."""
    from cordee.train.model import plain_name

    found = {plain_name(n): p for n, p in model.named_parameters()}
    found |= {plain_name(n): b for n, b in model.named_buffers()}
    return found


def check(files: HFCheckpoint, names: dict[str, str], targets: dict[str, object], tied: bool) -> None:
    """Every tensor present with the model's shape and a float dtype, and nothing the model lacks."""
    expected = {theirs: ours for ours, theirs in names.items()}
    for ours, theirs in names.items():
        if ours not in targets:
            raise InputError(f"cordee's model has no {ours} (for {theirs}): a bug in the name map")
        if theirs not in files.where:
            raise InputError(f"model.from_hf {shown(files.model_dir)}: tensor {theirs} is missing")
    for theirs in files.where:
        tied_head = tied and theirs == "lm_head.weight"  # some tied checkpoints still carry it
        if theirs not in expected and not tied_head and not theirs.endswith(IGNORED_SUFFIXES):
            raise InputError(
                f"{files.where[theirs]}: tensor {theirs} is not part of this model"
                f" (model.from_hf {shown(files.model_dir)}; its config.json does not describe these weights)"
            )
    for ours, theirs in names.items():
        have, want = files.shape(theirs), list(targets[ours].shape)
        if have != want:
            raise InputError(f"{theirs}: shape {have} in {files.where[theirs]}, expected {want}")
        if files.dtype(theirs) not in FLOAT_DTYPES:
            raise InputError(
                f"{theirs}: dtype {files.dtype(theirs)} in {files.where[theirs]}, expected a float"
            )


def load_hf_weights(model, model_dir: str, cfg, *, checkpoint_class=HFCheckpoint) -> dict:
    """Copy the checkpoint of `model_dir` into `model`, a Transformer(cfg) that may be FSDP2-
    sharded (DTensor parameters, Shard(0)) or plain, materialized (not on the meta device). Each
    rank reads only its rows. Returns {"tensors": n, "bytes_read": b} for the log line."""
    import torch

    files = checkpoint_class(model_dir)
    names = hf_names(cfg)
    targets = _targets(model)
    check(files, names, targets, cfg.tie_embeddings)
    bytes_read = 0
    with torch.no_grad():
        for ours, theirs in names.items():
            target = targets[ours]
            rows = _row_range(target)
            local = target.to_local() if hasattr(target, "to_local") else target
            data = files.read_rows(theirs) if rows is None else files.read_rows(theirs, *rows)
            if tuple(data.shape) != tuple(local.shape):
                raise InputError(f"{theirs}: read {list(data.shape)} for a shard of {list(local.shape)}")
            bytes_read += data.numel() * data.element_size()
            local.copy_(data.to(device=local.device, dtype=local.dtype))
    return {"tensors": len(names), "bytes_read": bytes_read}


def describe(model_dir: str, stats: dict) -> str:
    return (
        f"weights from {model_dir} ({stats['tensors']} tensors, {stats['bytes_read'] / 1e6:.1f} MB read here)"
    )
