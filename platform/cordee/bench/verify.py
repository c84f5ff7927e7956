"""Known inputs and expected outputs for the checking pass of the collective engine.

Every value is a small integer, exact in float32, bfloat16 and float16, and so is every partial
sum a reduction can form, whatever the algorithm's order:
- data that is moved (all_gather, alltoall, sendrecv): rank r's element i is
  (7 i + 13 r) mod P + 1, with P a prime below the dtype's largest exact integer (bf16 251, fp16
  2039, fp32 65521); the position it lands at says which rank and element it should come from,
  so a wrong value names its source rank.
- data that is summed (all_reduce, reduce_scatter): rank r adds 1 + (i + r) mod 4 to element i
  when (i - r) mod n < W (W = min(n, 4)), nothing elsewhere. A sum is at most 16 for any rank
  count (bf16 has 8 significant bits), and each element still combines up to four ranks.
A wrong-data fault adds 1 to each of one rank's input elements. Work goes in chunks of CHUNK
elements, so checking a large GPU buffer needs a bounded amount of temporary memory.
"""

from __future__ import annotations

CHUNK = 1 << 24
PRIMES = {"bfloat16": 251, "float16": 2039, "float32": 65521}
WINDOW = 4
REDUCTIONS = ("all_reduce", "reduce_scatter")


def moved(rank, idx, prime: int):
    """Rank `rank`'s element `idx` of moved data (rank: an int or a tensor like idx)."""
    return (idx * 7 + rank * 13) % prime + 1


def summand(rank: int, idx, n: int):
    """What rank `rank` adds to element `idx` of summed data."""
    import torch

    return torch.where((idx - rank) % n < min(n, WINDOW), 1 + (idx + rank) % 4, 0)


def total(idx, n: int):
    """The sum over all ranks of summand(r, idx, n): the ranks idx, idx-1, ... (mod n) add to it."""
    out = 0
    for w in range(min(n, WINDOW)):
        out = out + 1 + (idx + (idx - w) % n) % 4
    return out


def _chunks(numel: int, device):
    import torch

    for lo in range(0, numel, CHUNK):
        hi = min(numel, lo + CHUNK)
        yield lo, hi, torch.arange(lo, hi, dtype=torch.int64, device=device)


def _prime(tensor) -> int:
    return PRIMES[str(tensor.dtype).removeprefix("torch.")]


def fill(op: str, inp, me: int, n: int, wrong_data: bool) -> None:
    """Rank `me`'s input of the checking op (its values + 1 everywhere if wrong_data)."""
    prime = _prime(inp)
    for lo, hi, idx in _chunks(inp.numel(), inp.device):
        values = summand(me, idx, n) if op in REDUCTIONS else moved(me, idx, prime)
        inp[lo:hi].copy_(values + 1 if wrong_data else values)


def compare(op: str, out, me: int, n: int, counts) -> None:
    """Add rank `me`'s wrong elements of `out` to `counts` (int64, n + 1): counts[q] those that came
    from rank q, where the op tells (moved data), counts[n] all of them."""
    import torch

    prime, numel = _prime(out), out.numel()
    chunk = numel // n
    for lo, hi, idx in _chunks(numel, out.device):
        source = None
        if op == "all_reduce":
            expected = total(idx, n)
        elif op == "reduce_scatter":  # this rank holds chunk `me` of the summed buffer
            expected = total(idx + me * numel, n)
        elif op == "all_gather":  # chunk q is rank q's input
            source = idx // chunk
            expected = moved(source, idx % chunk, prime)
        elif op == "alltoall":  # chunk q is chunk `me` of rank q's input
            source = idx // chunk
            expected = moved(source, me * chunk + idx % chunk, prime)
        else:  # sendrecv: everything from the previous rank of the ring
            source = torch.full_like(idx, (me - 1) % n)
            expected = moved(source, idx, prime)
        bad = out[lo:hi] != expected.to(out.dtype)
        counts[n] += bad.sum()
        if source is not None:
            counts[:n] += torch.bincount(source[bad], minlength=n)
