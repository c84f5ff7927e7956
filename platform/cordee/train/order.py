"""The global sample order and each rank's batch of it, apart from where the samples come from.

The order is a pure function of (seed, step): each epoch is a keyed Feistel permutation of the
samples, evaluated only at the positions a step needs, so a run resumed at another world size reads
the same samples and nothing as large as the data set is ever built. `rank_batch` and
`masked_batch` cut a step's samples into per-rank rows of a TokenSource (cordee.train.data) or a
ChatSource (cordee.train.chatdata). Kept apart from the shard format so that the order, which
resumption depends on, reads on its own. numpy and torch are imported inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cordee.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from cordee.train.data import TokenSource

MASK64 = (1 << 64) - 1


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (Steele, Lea and Flood, 2014) on uint64 arrays: a strong bijective mix."""
    import numpy as np

    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


FEISTEL_ROUNDS = 6


def _permute(positions: np.ndarray, epochs: np.ndarray, seed: int, n: int) -> np.ndarray:
    """A keyed permutation of range(n) per (seed, epoch), evaluated at `positions`: a balanced
    Feistel network on the smallest even number of bits covering n, with cycle walking (values
    outside range(n) go through the network again; fewer than 4 passes expected)."""
    import numpy as np

    bits = max(2, (n - 1).bit_length())  # exact; math.log2 rounds near large powers of two
    half = np.uint64((bits + 1) // 2)
    mask = np.uint64((1 << int(half)) - 1)
    base = mix64(np.array([seed & MASK64], dtype=np.uint64))[0]
    keys = [mix64(mix64(epochs ^ base) + np.uint64(r)) for r in range(FEISTEL_ROUNDS)]
    out = positions.copy()
    todo = np.ones(out.shape, dtype=bool)
    while todo.any():
        left, right = out[todo] >> half, out[todo] & mask
        for key in keys:
            left, right = right, left ^ (mix64(right ^ key[todo]) & mask)
        out[todo] = (left << half) | right
        todo &= out >= np.uint64(n)
    return out


def step_indices(seed: int, step: int, global_batch: int, num_samples: int) -> list[int]:
    """The samples of optimizer step `step`: positions [step * global_batch, (step + 1) *
    global_batch) of the endless sequence of epochs, each epoch a permutation of range(num_samples)
    keyed by (seed, epoch). Pure: no world size, no state."""
    import numpy as np

    if num_samples < 1 or global_batch < 1 or step < 0:
        raise ValueError(f"step {step}, global_batch {global_batch}, num_samples {num_samples}")
    positions = np.arange(step * global_batch, (step + 1) * global_batch, dtype=np.uint64)
    epochs, offsets = positions // np.uint64(num_samples), positions % np.uint64(num_samples)
    return [int(i) for i in _permute(offsets, epochs, seed, num_samples)]


def rank_batch(
    source: TokenSource, seed: int, step: int, global_batch: int, seq_len: int, rank: int, world: int
):
    """This rank's rows of step `step`: rows [rank * b, (rank + 1) * b) of step_indices, b =
    global_batch / world, as (inputs, targets) int64 tensors of shape [b, seq_len]."""
    import numpy as np
    import torch

    indices = _rank_indices(source, seed, step, global_batch, seq_len, rank, world)
    rows = np.stack([source.sample(i, seq_len) for i in indices])
    # numpy makes the copies: torch's copy kernel took 100 times as long on a busy CPU
    inputs, targets = np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def _rank_indices(source, seed: int, step: int, global_batch: int, seq_len: int, rank: int, world: int):
    if global_batch % world:
        raise InputError(
            f"global_batch {global_batch} is not divisible by the world size {world} "
            "(each rank reads global_batch / world sequences per step)"
        )
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world {world}")
    count = source.num_samples(seq_len)
    if count < 1:
        raise InputError(f"data ({source.describe()}): fewer than seq_len + 1 = {seq_len + 1} tokens")
    share = global_batch // world
    return step_indices(seed, step, global_batch, count)[rank * share : (rank + 1) * share]


IGNORE_INDEX = -100  # torch's cross_entropy default: targets that do not count


@dataclass
class MaskedBatch:
    """A rank's rows of a chat data set, [b, seq_len] each: `targets` is IGNORE_INDEX where the
    loss does not count; `positions` restart at 0 and `segments` change at each conversation
    (None for padded rows, where plain causal attention from position 0 is already right)."""

    inputs: object
    targets: object
    positions: object | None
    segments: object | None
    counted: int  # targets that count


def masked_batch(source, seed: int, step: int, global_batch: int, seq_len: int, rank: int, world: int):
    """rank_batch's rows of a ChatSource (the same pure order), with the loss mask applied."""
    import numpy as np
    import torch

    indices = _rank_indices(source, seed, step, global_batch, seq_len, rank, world)
    tokens, flags = (np.stack(part) for part in zip(*(source.row(i) for i in indices), strict=True))
    from cordee.train.chatdata import PAD, START, TARGET

    inputs = np.ascontiguousarray(tokens[:, :-1])
    counts = (flags[:, 1:] & TARGET) != 0
    targets = np.where(counts, tokens[:, 1:], IGNORE_INDEX)
    positions = segments = None
    if source.packing == "pack":
        head = flags[:, :-1]
        pad = (head & PAD) != 0
        first_pad = pad & ~np.pad(pad, ((0, 0), (1, 0)))[:, :-1]  # padding is a segment of its own
        starts = ((head & START) != 0) | first_pad
        starts[:, 0] = True
        columns = np.arange(seq_len)
        segments = torch.from_numpy(np.cumsum(starts, axis=1))
        positions = torch.from_numpy(columns - np.maximum.accumulate(np.where(starts, columns, 0), axis=1))
    return MaskedBatch(
        torch.from_numpy(inputs), torch.from_numpy(targets), positions, segments, int(counts.sum())
    )
