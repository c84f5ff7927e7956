"""The training loop of `cordee train`: one optimizer step at a time, every rank in lock step.

Per step: this rank's rows of the step's global batch (a pure function of the data seed and the
step), forward/backward over micro batches (gradients reduced on the last one), gradient
clipping, AdamW at the step's learning rate, then ONE all_reduce of a small float64 vector that
carries the loss, the gradient norm, each rank's compute time and stop signal, and a CRC of each
row read. That collective is where the ranks agree to stop (any rank's signal stops all at the
same step), where stragglers show (per-rank times) and what proves a resumed run reads the same
samples at any world size (`samples_crc` in the metrics file). Then metrics, then a checkpoint:
async every checkpoint.interval steps, sync at a stop (exit EXIT_STOPPED) and at the end (exit 0).

Steps are numbered from 1: checkpoint step k holds the state after k optimizer steps, and a
resume continues with step k + 1 reading the samples of step k + 1.
"""

from __future__ import annotations

import gc
import math
import os
import random
import resource
import signal
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from cordee.errors import CordeeError
from cordee.train import parallel
from cordee.train.checkpoint import Checkpointer
from cordee.train.config import TrainConfig, check_world, config_hash, grad_accum_steps, learning_rate
from cordee.train.data import open_source, require_samples
from cordee.train.metrics import MetricsLog, format_step, peak_tflops, step_record
from cordee.train.model import Transformer, cross_entropy, flops_per_token
from cordee.train.order import IGNORE_INDEX, masked_batch, rank_batch
from cordee.train.signals import EXIT_STOPPED, StopRequest

COLLECTIVE_TIMEOUT_S = 600.0  # every collective of the run, checkpoints included


@dataclass
class Summary:
    """What a run did; `cordee train --json` prints it (schema cordee.train/1)."""

    exit_code: int = 0
    first_step: int = 1
    last_step: int = 0
    stopped_by: str | None = None
    final_loss: float | None = None
    setup: str = ""
    records: list[dict] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        timed = self.records[len(self.records) // 5 :]  # the first steps include compilation

        def mean(key: str) -> float | None:
            values = [r[key] for r in timed if r.get(key) is not None]
            return sum(values) / len(values) if values else None

        return {
            "schema": "cordee.train/1", "exit_code": self.exit_code, "first_step": self.first_step,
            "last_step": self.last_step, "stopped_by": self.stopped_by, "final_loss": self.final_loss,
            "setup": self.setup, "mean_step_time_s": mean("step_time_s"),
            "mean_tokens_per_s": mean("tokens_per_s"), "mean_mfu": mean("mfu"),
        }  # fmt: skip


def train(cfg: TrainConfig) -> int:
    """Run the training of `cfg` in this process (one rank); the exit code: 0 finished,
    EXIT_STOPPED stopped by a signal after a complete checkpoint."""
    return run(cfg).exit_code


def run(cfg: TrainConfig, log=None) -> Summary:
    ranks = parallel.read_ranks(os.environ)
    check_world(cfg, ranks.world_size)
    stop = StopRequest().install(cfg.stop_signals)  # first: a signal during start-up is not lost
    summary = None
    try:
        # checked on every rank before any rendezvous: bad data stops all of them alike
        source = open_source(cfg.data, cfg.model.vocab_size)
        require_samples(source, cfg.seq_len)
        d = parallel.init(ranks, cfg.device, COLLECTIVE_TIMEOUT_S)
        trainer = Trainer(cfg, d, source, stop, log or _console(d.rank))
        summary = trainer.run()
        # FSDP2's device meshes (in the model, the optimizer state, the checkpoint's host copy)
        # hold the process groups: freed here, before the groups are destroyed, not during the
        # interpreter's exit, where gloo's threads abort ("terminate called without an active
        # exception", exit 134)
        del trainer
        gc.collect()
        parallel.shutdown()
        return summary
    finally:
        if summary is not None and summary.exit_code == EXIT_STOPPED:
            # The first rank to exit with 75 is a failed task to `srun --kill-on-bad-exit` and to
            # `cordee launch`, which then SIGTERM the others: those are past their save and
            # leaving too, and must leave with 75, not die with 143. The stop handlers (a flag
            # each) stay until the process exits, so that there is no moment without one.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            stop.uninstall()


def _console(rank: int):
    def log(line: str) -> None:
        if rank == 0:
            print(f"cordee train: {line}", file=sys.stderr, flush=True)

    return log


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def row_crcs(inputs: torch.Tensor) -> list[int]:
    """CRC-32 of each row's tokens: the same samples give the same values at any world size."""
    return [zlib.crc32(row.numpy().tobytes()) for row in inputs]


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated GPU memory, or on CPU the peak resident set size of the process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """AdamW; weight decay on matrices only (not on norms), fused kernels on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, **kwargs)


class Trainer:
    def __init__(self, cfg: TrainConfig, d: parallel.Dist, source, stop: StopRequest, log) -> None:
        self.cfg, self.d, self.source, self.stop, self.log = cfg, d, source, stop, log
        self.accum = grad_accum_steps(cfg, d.world_size)
        self.flops_per_token = flops_per_token(cfg.model, cfg.seq_len)
        self.peak, peak_source = peak_tflops(d.device_name, cfg.peak_tflops) if d.device.type == "cuda" else (
            None, "CPU: no MFU")  # fmt: skip
        seed_everything(cfg.seed)
        if cfg.model.from_hf:
            self.model, setup = self._build_from_hf()
        else:
            with torch.device(d.device):
                model = Transformer(cfg.model)
            model.init_weights(cfg.seed)  # before sharding: the same weights at every world size
            self.model, setup = parallel.wrap_model(
                model, d, precision=cfg.precision, compile=cfg.compile,
                activation_checkpointing=cfg.activation_checkpointing,
            )  # fmt: skip
        self.optimizer = build_optimizer(self.model, cfg, d.device)
        self.setup = f"{setup}; grad accumulation {self.accum}; peak FLOP/s: {peak_source}"
        self.log(f"{cfg.name}: {setup}")
        self.log(f"data {source.describe()}; per rank and step {self.accum} x {cfg.micro_batch} sequences")
        if getattr(source, "packing", None) == "pack":  # conversations attend only within themselves
            plain = getattr(self.model, "module", self.model)  # DDP wraps; FSDP2 does not
            kernel = "FlexAttention" if getattr(plain, "flex_attention", False) else "SDPA"
            self.log(f"packed rows: {kernel} with a per-conversation mask")
        self.ckpt = None
        if cfg.checkpoint.dir:
            c = cfg.checkpoint
            self.ckpt = Checkpointer(
                c.dir, c.keep, async_save=c.async_save, rank=d.rank, world_size=d.world_size,
                log=self.log, timeout_s=COLLECTIVE_TIMEOUT_S,
            )  # fmt: skip
        self.hash = config_hash(cfg)
        self.checkpoint_s = 0.0  # seconds in checkpoint calls since the last step record
        self.stop_agreed = False  # what the ranks agreed at the last step, not this rank's live flag
        self.metrics = MetricsLog(cfg.metrics_file or None, d.rank)

    def _build_from_hf(self):
        """The model of a Hugging Face directory: built on the meta device and sharded before it
        takes memory, then each rank reads its own rows (no rank holds the whole model). Where
        this torch's gloo cannot shard, the full model is loaded, then wrapped in DDP."""
        from cordee.train.hfload import describe, load_hf_weights

        cfg, d = self.cfg, self.d
        wrap = dict(precision=cfg.precision, compile=cfg.compile,
                    activation_checkpointing=cfg.activation_checkpointing)  # fmt: skip
        with torch.device("meta"):
            model = Transformer(cfg.model)
        shard_first = d.device.type == "cuda" or parallel.gloo_can_shard()
        if shard_first:
            model, setup = parallel.wrap_model(model, d, **wrap)
        model.to_empty(device=d.device)
        model.reset_buffers()
        stats = load_hf_weights(model, cfg.model.from_hf, cfg.model)
        if not shard_first:
            model, setup = parallel.wrap_model(model, d, **wrap)
        self.log(f"{cfg.name}: {describe(cfg.model.from_hf, stats)}")
        return model, setup

    def app_state(self) -> dict:
        return {"model": self.model, "optim": self.optimizer}

    def run(self) -> Summary:
        summary = Summary(setup=self.setup)
        try:
            start = self._resume()
            summary.first_step = start + 1
            saved = start
            for step in range(start + 1, self.cfg.steps + 1):
                record = self._step(step)
                summary.records.append(record)
                summary.last_step, summary.final_loss = step, record["loss"]
                if self.stop_agreed and step < self.cfg.steps:
                    summary.stopped_by = self.stop.signal_name
                    self._save(step, sync=True, saved=saved)
                    self._close_checkpoints()
                    self.log(f"stopped by {summary.stopped_by} after step {step}; exit {EXIT_STOPPED}")
                    summary.exit_code = EXIT_STOPPED
                    return summary
                if self.ckpt and step == start + 1:
                    self.ckpt.prepare(self.app_state())  # the async host copy, once the optimizer has state
                if self.ckpt and step % self.cfg.checkpoint.interval == 0 and step < self.cfg.steps:
                    if self._save(step, sync=False, saved=saved):
                        saved = step
            self._save(self.cfg.steps, sync=True, saved=saved)
            self._close_checkpoints()
            self.log(f"finished {self.cfg.steps} steps")
            return summary
        except CordeeError:
            raise
        except Exception as e:  # a rank's own failure, or a peer's seen through a collective
            raise CordeeError(f"{self.d.where()} failed at step {summary.last_step + 1}: "
                              f"{parallel.first_line(e)}") from None  # fmt: skip
        finally:
            self.metrics.close()

    def _resume(self) -> int:
        if self.ckpt is None:
            return 0
        extra = self.ckpt.load_latest(self.app_state(), config_hash=self.hash)
        if extra is None:
            return 0
        step = int(extra["step"])
        self.log(f"resuming after step {step} (data position: sample {step * self.cfg.global_batch})")
        return step

    def _save(self, step: int, *, sync: bool, saved: int) -> bool:
        """True when step `step` is (being) saved; False when there is nothing to save into or an
        async save was skipped because the previous one is still being written."""
        if self.ckpt is None:
            if sync and self.stop.requested:
                self.log("warning: no checkpoint.dir, nothing saved: this run cannot resume")
            return False
        t0 = time.perf_counter()
        done = True
        if step != saved:
            extra = {"config_hash": self.hash, "samples_seen": step * self.cfg.global_batch,
                     "world_size": self.d.world_size, "model": asdict(self.cfg.model),
                     "hf_source": self.cfg.model.from_hf}  # fmt: skip
            done = self.ckpt.save(step, self.app_state(), extra, sync=sync)
        if sync:
            self.ckpt.wait()
        self.checkpoint_s += time.perf_counter() - t0  # the training loop's cost of this save
        return done

    def _close_checkpoints(self) -> None:
        if self.ckpt is not None:
            self.ckpt.close()  # frees the host copies staging keeps between saves

    def _set_gradient_sync(self, enabled: bool) -> None:
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(enabled)
        elif hasattr(self.model, "require_backward_grad_sync"):  # DDP
            self.model.require_backward_grad_sync = enabled

    def _masked_backward(self, batch) -> tuple[torch.Tensor, int]:
        """Forward and backward over this rank's micro batches of a MaskedBatch, the loss summed
        over counted targets and divided by the count of the WHOLE step (every rank, every micro
        batch; one all_reduce first), times the world size, which FSDP2/DDP then divide by: the
        gradient is that of the mean over every counted token at any world size and accumulation.
        Returns (this rank's share of the step's mean loss, the step's counted targets)."""
        import torch.distributed as dist
        import torch.nn.functional as F

        d, mb = self.d, self.cfg.micro_batch
        count = torch.tensor([float(batch.counted)], dtype=torch.float64, device=d.device)
        dist.all_reduce(count)
        counted = int(count.item())
        scale = d.world_size / max(counted, 1)

        def micro(t, m):
            return None if t is None else t[m * mb : (m + 1) * mb].to(d.device, non_blocking=True)

        loss_sum = torch.zeros((), device=d.device, dtype=torch.float32)
        for m in range(self.accum):
            self._set_gradient_sync(m == self.accum - 1)
            logits = self.model(micro(batch.inputs, m), positions=micro(batch.positions, m),
                                segments=micro(batch.segments, m))  # fmt: skip
            loss = F.cross_entropy(logits.float().flatten(0, 1), micro(batch.targets, m).flatten(),
                                   ignore_index=IGNORE_INDEX, reduction="sum") * scale  # fmt: skip
            loss.backward()
            loss_sum += loss.detach()
        return loss_sum, counted

    def _step(self, step: int) -> dict:
        cfg, d = self.cfg, self.d
        t0 = time.perf_counter()
        lr = learning_rate(cfg, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        where = (self.source, cfg.data.seed, step - 1, cfg.global_batch, cfg.seq_len, d.rank, d.world_size)
        loss_tokens = None
        if getattr(self.source, "masked", False):  # chat rows: only the assistant's tokens count
            batch = masked_batch(*where)
            crcs = row_crcs(batch.inputs)
            loss_sum, loss_tokens = self._masked_backward(batch)
        else:
            inputs, targets = rank_batch(*where)
            crcs = row_crcs(inputs)
            inputs, targets = inputs.to(d.device, non_blocking=True), targets.to(d.device, non_blocking=True)
            loss_sum = torch.zeros((), device=d.device, dtype=torch.float32)
            mb = cfg.micro_batch
            for m in range(self.accum):
                self._set_gradient_sync(m == self.accum - 1)
                logits = self.model(inputs[m * mb : (m + 1) * mb])
                loss = cross_entropy(logits, targets[m * mb : (m + 1) * mb]) / self.accum
                loss.backward()
                loss_sum += loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or math.inf)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if d.device.type == "cuda":
            torch.cuda.synchronize(d.device)
        compute_s = time.perf_counter() - t0
        stats = self._agree(loss_sum, norm, compute_s, crcs)
        step_time = time.perf_counter() - t0
        record = step_record(
            step=step, loss=stats["loss"], lr=lr, grad_norm=stats["grad_norm"],
            tokens=cfg.global_batch * cfg.seq_len, step_time_s=step_time, world_size=d.world_size,
            flops_per_token=self.flops_per_token, peak_tflops=self.peak,
            peak_mem_bytes=peak_memory_bytes(d.device), rank_step_times=stats["times"],
            device=d.device.type,
        )  # fmt: skip
        record["samples_crc"] = stats["samples_crc"]
        if loss_tokens is not None:
            record["loss_tokens"] = loss_tokens  # the step's counted targets, all ranks
        record["time"] = time.time()  # with checkpoint_s: what the saves between steps cost
        record["checkpoint_s"], self.checkpoint_s = self.checkpoint_s, 0.0
        self.stop_agreed = stats["stop_rank"] is not None
        if self.stop_agreed:
            record["stop_signal"] = self.stop.signal_name
        self.metrics.log(record)
        if step % cfg.log_interval == 0 or step == cfg.steps or self.stop_agreed:
            self.log(format_step(record))
        return record

    def _agree(self, loss_sum, norm, compute_s: float, crcs: list[int]) -> dict:
        """One all_reduce (SUM) of [loss, grad norm, per-rank time, per-rank stop signal, per-row
        CRC]: each rank fills its own slots, zeros elsewhere. float64 holds CRC-32s exactly."""
        import torch.distributed as dist

        d, world, rows = self.d, self.d.world_size, len(crcs)
        vec = torch.zeros(2 + 2 * world + rows * world, dtype=torch.float64, device=d.device)
        vec[0], vec[1] = loss_sum.double(), norm.double()
        vec[2 + d.rank] = compute_s
        vec[2 + world + d.rank] = float(self.stop.signum)
        first_row = 2 + 2 * world + d.rank * rows
        vec[first_row : first_row + rows] = torch.tensor(crcs, dtype=torch.float64)
        dist.all_reduce(vec)
        values = vec.tolist()
        signals = values[2 + world : 2 + 2 * world]
        stop_rank = next((r for r, s in enumerate(signals) if s), None)
        if stop_rank is not None:
            self.stop.request(int(signals[stop_rank]))  # the same step on every rank
        all_crcs = [int(c) for c in values[2 + 2 * world :]]
        return {
            "loss": values[0] / world,
            "grad_norm": values[1] / world,
            "times": values[2 : 2 + world],
            "stop_rank": stop_rank,
            "samples_crc": zlib.crc32(struct.pack(f"<{len(all_crcs)}Q", *all_crcs)),
        }
