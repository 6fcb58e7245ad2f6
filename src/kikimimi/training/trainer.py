"""The pre-training loop: devices, DDP, AMP, LR schedule, gradient accumulation, checkpoints, logs.

The trainer knows only the method interface of ``docs/architecture.md``: ``method(batch)["loss"]``,
``method.on_after_step(step, total_steps)``, ``method.param_groups(weight_decay)``,
``method.export_official_state_dict()`` (and optionally ``set_generator(torch.Generator)`` for the
method's own randomness and a ``last_tau`` attribute reported as ``ema_tau``).

Counting: a *step* is one optimiser update; it consumes ``accum_iter`` micro-batches of ``batch_size``
items per rank, so ``effective_batch = batch_size × world_size × accum_iter``. The data stream is
continuous across epochs: after ``s`` steps a rank has consumed ``m = s × accum_iter`` micro-batches,
i.e. it is at epoch ``m // iters_per_epoch``, batch ``m % iters_per_epoch`` — which is all a resume
needs, because crops depend only on ``(seed, epoch, index)`` (see :mod:`kikimimi.data.corpus`).

Files written by rank 0 into ``config.out_dir`` (the run folder):
``checkpoint-<step>.pth`` (every ``save_every`` steps and at the end; atomic temp + rename),
``last.pth`` (points to the newest), ``log.jsonl`` (one JSON object per logged step).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from kikimimi.checkpoints.runs import CHECKPOINT_PREFIX, find_resume_checkpoint, list_checkpoints, point_last
from kikimimi.data.corpus import CropDataset, make_loader
from kikimimi.device import AMP_MODES, resolve_amp
from kikimimi.fileio import atomic_write_text
from kikimimi.optim import SCHEDULES, lr_at_step, scaled_lr, set_lr
from kikimimi.training.checkpointing import (
    capture_rng_state,
    restore_method_state,
    restore_rng_state,
    save_checkpoint_file,
    split_method_state,
)
from kikimimi.training.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
)

__all__ = [
    "DEBUG_HASH_ENV",
    "ESTIMATE_AFTER_STEPS",
    "LONG_CPU_RUN_S",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "estimate_line",
    "parameter_hash",
    "load_training_checkpoint",
]

#: when set to a folder, every rank writes ``param-hash-rank<r>.txt`` there at the end of ``fit``
DEBUG_HASH_ENV = "KIKIMIMI_DEBUG_PARAM_HASH"
LOG_NAME = "log.jsonl"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


@dataclass
class TrainConfig:
    """Every setting of a pre-training run (serialised as a plain dict into checkpoints).

    Attributes:
        method, size: informational (the method object is built by the caller).
        steps / epochs: run length; exactly one is needed (``epochs`` may be fractional).
        batch_size: items per rank per micro-batch; ``accum_iter`` micro-batches per optimiser step.
        lr: absolute learning rate; if ``None``, ``lr = blr × effective_batch / 256``.
        optimizer: ``adamw`` or ``adam``; ``betas``, ``weight_decay`` as usual.
        schedule: ``cosine`` (linear warm-up then half-cosine to ``min_lr``) or ``constant``.
        warmup_steps / warmup_epochs: warm-up length (steps win when both are given).
        grad_clip: max gradient L2 norm (``None`` = no clipping).
        amp: ``auto`` (bf16 on CUDA if supported, else fp16 + GradScaler; float32 on CPU), ``bf16``,
            ``fp16`` or ``off``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun the local rank picks the GPU).
        seed: seeds data order/crops and the global RNGs (``seed + rank`` for per-rank randomness).
        save_every: checkpoint period in steps (``None`` = only the final one); ``keep_checkpoints``
            keeps the newest N periodic checkpoints (``None`` = all).
        log_every: log period in steps.
        out_dir: the run folder (created).
        resume: run folder or checkpoint file to continue from.
    """

    method: str = "m2d"
    size: str = "tiny"
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    accum_iter: int = 1
    lr: float | None = None
    blr: float = 3e-4
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    schedule: str = "cosine"
    warmup_steps: int | None = None
    warmup_epochs: float | None = None
    min_lr: float = 0.0
    grad_clip: float | None = 3.0
    amp: str = "auto"
    device: str = "auto"
    seed: int = 3
    num_workers: int = 0
    save_every: int | None = None
    keep_checkpoints: int | None = None
    log_every: int = 10
    out_dir: str = "runs/run"
    resume: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        problems = []
        if (self.steps is None) == (self.epochs is None):
            problems.append("give exactly one of steps or epochs")
        if self.steps is not None and self.steps <= 0:
            problems.append(f"steps must be > 0, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            problems.append(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size <= 0 or self.accum_iter <= 0:
            problems.append("batch_size and accum_iter must be > 0")
        if self.optimizer not in ("adamw", "adam"):
            problems.append(f"optimizer must be adamw or adam, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            problems.append(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.save_every is not None and self.save_every <= 0:
            problems.append(f"save_every must be > 0, got {self.save_every}")
        if self.log_every <= 0:
            problems.append(f"log_every must be > 0, got {self.log_every}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring keys that are not fields (e.g. method settings)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`: run folder, last checkpoint, steps, per-step mean losses."""

    run_dir: Path
    checkpoint: Path | None
    step: int
    total_steps: int
    losses: dict[int, float] = field(default_factory=dict)


def parameter_hash(module: nn.Module) -> str:
    """SHA-256 over every state-dict tensor (name, dtype, bytes) — equal hashes mean equal weights."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        if not isinstance(value, torch.Tensor):
            continue
        h.update(name.encode())
        t = value.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :class:`Trainer` with ``torch.load(weights_only=True)`` on CPU.

    Raises:
        ValueError: the file is not a kikimimi training checkpoint (no ``trainer_state``).
    """
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "trainer_state" not in ckpt or "model" not in ckpt:
        raise ValueError(
            f"'{path}': not a kikimimi training checkpoint (no trainer_state); to start from official "
            "weights use --init-from instead of --resume"
        )
    return ckpt


def _next_micro_batches(loader, sampler, iters_per_epoch: int, micro: int):
    """Infinite iterator of ``(epoch, batch)`` starting at global micro-batch ``micro``."""
    epoch, pos = divmod(micro, iters_per_epoch)
    while True:
        sampler.set_epoch(epoch)
        sampler.set_start(pos * loader.batch_size)
        for batch in loader:
            yield epoch, batch
        epoch, pos = epoch + 1, 0


#: steps timed (after the first) for the run-time estimate
ESTIMATE_AFTER_STEPS = 2
#: a CPU run estimated to take longer than this gets a warning
LONG_CPU_RUN_S = 3600.0


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def estimate_line(per_step_s: float, step: int, total: int, device_type: str) -> str:
    """One line: the measured time per step, the estimated rest of the run and, for a CPU run estimated to
    take longer than :data:`LONG_CPU_RUN_S`, a warning with what to change."""
    rest = per_step_s * (total - step)
    line = (f"about {per_step_s:.2f} s per step: {_duration(rest)} for the remaining {total - step} of "
            f"{total} steps (finishing about {time.strftime('%H:%M', time.localtime(time.time() + rest))})")
    if device_type == "cpu" and rest > LONG_CPU_RUN_S:
        line += ("\nwarning: this CPU run is estimated to take more than an hour; for a short run use "
                 "--recipe cpu-small, or fewer --steps, a smaller --batch-size / --input-frames / --size")
    return line


class Trainer:
    """Runs a method on a dataset according to a :class:`TrainConfig`.

    Args:
        method: the method module (see module docstring); moved to the device by the trainer.
        dataset: a :class:`~kikimimi.data.corpus.CropDataset` (or any dataset accepting ``(epoch, index)`` keys
            and yielding dicts of tensors).
        config: run settings.
        args: extra JSON-able settings stored with ``config`` in every checkpoint's ``args`` dict
            (method config, data sources, norm stats, …).
        batch_transform: applied on the device to each collated batch
            (e.g. :class:`~kikimimi.data.corpus.DeviceLogMel`).
        dist: process placement; default: :func:`~kikimimi.training.distributed.init_distributed`.
        notice: receives one line (rank 0) after the first few steps: time per step and for the run
            (:func:`estimate_line`); ``None`` = quiet.
    """

    def __init__(
        self,
        method: nn.Module,
        dataset: CropDataset,
        config: TrainConfig,
        *,
        args: dict[str, Any] | None = None,
        batch_transform: Callable[[dict], dict] | None = None,
        dist: DistInfo | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.method = method
        self.notice = notice
        self.dataset = dataset
        self.config = config
        self.extra_args = dict(args or {})
        self.batch_transform = batch_transform
        self._dist = dist
        self.run_dir = Path(config.out_dir)

    # ------------------------------------------------------------------------------------ set-up
    def _args_dict(self) -> dict[str, Any]:
        return {**self.extra_args, **self.config.to_dict()}

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        groups = self.method.param_groups(cfg.weight_decay)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=0.0, betas=cfg.betas, weight_decay=cfg.weight_decay)
        return torch.optim.Adam(groups, lr=0.0, betas=cfg.betas, weight_decay=cfg.weight_decay)

    def _lengths(self, iters_per_epoch: int) -> tuple[int, int]:
        cfg = self.config
        if cfg.steps is not None:
            total = int(cfg.steps)
        else:
            total = max(1, int(cfg.epochs * iters_per_epoch) // cfg.accum_iter)
        if cfg.warmup_steps is not None:
            warmup = int(cfg.warmup_steps)
        elif cfg.warmup_epochs is not None:
            warmup = int(round(cfg.warmup_epochs * iters_per_epoch / cfg.accum_iter))
        else:
            warmup = 0
        if warmup >= total > 1 and self.dist.is_main:
            warnings.warn(f"the warm-up ({warmup} steps) is as long as the run ({total} steps): the learning rate "
                          "never reaches its peak; shorten --warmup-steps/--warmup-epochs", stacklevel=3)
        return total, min(warmup, total)

    # ------------------------------------------------------------------------------------ checkpoints
    def _save(self, step: int, micro: int, iters_per_epoch: int, optimizer, scaler, generator) -> Path | None:
        """Collect every rank's state; rank 0 writes ``checkpoint-<step>.pth`` atomically."""
        official = self.method.export_official_state_dict()
        shared, extra = split_method_state(self.method, official)
        rank_state = {"rng": capture_rng_state(generator), "method_extra": extra}
        ranks = all_gather_object(rank_state)
        path: Path | None = None
        if self.dist.is_main:
            ckpt = {
                "model": {k: v.detach().cpu() for k, v in official.items()},
                "args": self._args_dict(),
                "epoch": micro // iters_per_epoch,
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "trainer_state": {
                    "step": step,
                    "micro_step": micro,
                    "iters_per_epoch": iters_per_epoch,
                    "data_epoch": micro // iters_per_epoch,
                    "data_position": micro % iters_per_epoch,
                    "world_size": self.dist.world_size,
                    "method_state": shared,
                    "method_last_tau": getattr(self.method, "last_tau", None),
                    "ranks": ranks,
                },
            }
            path = self.run_dir / f"{CHECKPOINT_PREFIX}{step}.pth"
            save_checkpoint_file(ckpt, path)  # a full disk: one line, earlier checkpoints intact
            point_last(self.run_dir, path)
            self._prune(path)
        barrier()
        return path

    def _prune(self, newest: Path) -> None:
        keep = self.config.keep_checkpoints
        if keep is None:
            return
        old = [p for p in list_checkpoints(self.run_dir) if p != newest]
        for p in old[: max(0, len(old) - (keep - 1))]:
            p.unlink(missing_ok=True)

    def _restore(self, path: Path, optimizer, scaler, generator) -> tuple[int, Path]:
        ckpt = load_training_checkpoint(path)
        ts = ckpt["trainer_state"]
        ranks = ts["ranks"]
        mine = ranks[self.dist.rank % len(ranks)]
        restore_method_state(
            self.method, ckpt["model"], ts["method_state"], mine["method_extra"], source=str(path)
        )
        if ts.get("method_last_tau") is not None and hasattr(self.method, "last_tau"):
            self.method.last_tau = ts["method_last_tau"]
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") is not None and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(mine["rng"], generator)
        return int(ts["step"]), path

    # ------------------------------------------------------------------------------------ logging
    def _trim_log(self, step: int) -> None:
        """Drop log lines after ``step`` (written by a run that was killed after its last checkpoint)."""
        log = self.run_dir / LOG_NAME
        if not log.exists():
            return
        kept = []
        for line in log.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    kept.append(line)
            except (ValueError, AttributeError):
                continue
        atomic_write_text(log, "".join(f"{line}\n" for line in kept))

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / LOG_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------------------------ main loop
    def fit(self) -> TrainResult:
        """Train until the configured number of steps; returns a :class:`TrainResult`.

        Raises:
            TrainingDivergedError: the (rank-averaged) loss of a step was NaN/Inf; nothing is saved for
                that step, earlier checkpoints stay intact.
        """
        self.dist = self._dist or init_distributed(self.config.device)
        try:
            return self._fit()
        finally:
            if self._dist is None:
                cleanup_distributed(self.dist)

    def _fit(self) -> TrainResult:
        cfg, dist = self.config, self.dist
        device = dist.device
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier()

        torch.manual_seed(cfg.seed + dist.rank)
        random.seed(cfg.seed + dist.rank)
        np.random.seed((cfg.seed + dist.rank) % 2**32)
        generator = None
        if hasattr(self.method, "set_generator"):
            generator = torch.Generator().manual_seed(cfg.seed * 1000 + dist.rank)
            self.method.set_generator(generator)

        self.method.to(device)
        optimizer = self._build_optimizer()
        amp_dtype, use_scaler = resolve_amp(cfg.amp, device)
        scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

        loader, sampler = make_loader(
            self.dataset,
            cfg.batch_size,
            num_replicas=dist.world_size,
            rank=dist.rank,
            seed=cfg.seed,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
        )
        iters_per_epoch = len(sampler) // cfg.batch_size
        total, warmup = self._lengths(iters_per_epoch)
        effective_batch = cfg.batch_size * dist.world_size * cfg.accum_iter
        base_lr = float(cfg.lr) if cfg.lr is not None else scaled_lr(cfg.blr, effective_batch)

        step = 0
        last_ckpt: Path | None = None
        if cfg.resume:
            step, last_ckpt = self._restore(find_resume_checkpoint(cfg.resume), optimizer, scaler, generator)
            if dist.is_main:
                self._trim_log(step)
        self.extra_args.update(
            {"effective_batch": effective_batch, "abs_lr": base_lr, "total_steps": total, "warmup": warmup}
        )

        model: nn.Module = self.method
        if dist.distributed:
            model = DDP(self.method, device_ids=[device.index] if device.type == "cuda" else None)
        self.method.train()

        micro = step * cfg.accum_iter
        batches = _next_micro_batches(loader, sampler, iters_per_epoch, micro)
        losses: dict[int, float] = {}
        progress = None
        if cfg.progress and dist.is_main:
            progress = tqdm(total=total, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
        t_start = time.perf_counter()
        t_window, steps_window = t_start, 0
        first_timed: tuple[int, float] | None = None  # (step, time) after this process's first step
        params = [p for g in optimizer.param_groups for p in g["params"]]
        try:
            while step < total:
                lr = lr_at_step(
                    step, total, base_lr, warmup_steps=warmup, min_lr=cfg.min_lr, schedule=cfg.schedule
                )
                set_lr(optimizer, lr)
                micro_losses = []
                for a in range(cfg.accum_iter):
                    epoch, batch = next(batches)
                    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                    if self.batch_transform is not None:
                        batch = self.batch_transform(batch)
                    sync = a == cfg.accum_iter - 1 or not dist.distributed
                    ctx = contextlib.nullcontext() if sync else model.no_sync()
                    with ctx:
                        with torch.autocast(
                            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                        ):
                            out = model(batch)
                        loss = out["loss"].float()
                        scaler.scale(loss / cfg.accum_iter).backward()
                    micro_losses.append(loss.detach())
                mean_loss = float(all_reduce_mean(torch.stack(micro_losses).mean()))
                if not math.isfinite(mean_loss):
                    optimizer.zero_grad(set_to_none=True)
                    where = (
                        f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                    )
                    raise TrainingDivergedError(
                        f"loss became {mean_loss} at step {step + 1} (epoch {epoch}); stopping without "
                        f"saving this state; {where}. Lower the learning rate or check data/normalisation."
                    )
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                micro = step * cfg.accum_iter
                self.method.on_after_step(step, total)
                losses[step] = mean_loss
                steps_window += 1
                if dist.is_main and self.notice is not None:
                    if first_timed is None:  # the first step pays for allocation and warm-up; time the next ones
                        first_timed = (step, time.perf_counter())
                    elif step == first_timed[0] + ESTIMATE_AFTER_STEPS and step < total:
                        per_step = (time.perf_counter() - first_timed[1]) / ESTIMATE_AFTER_STEPS
                        self.notice(estimate_line(per_step, step, total, device.type))

                if dist.is_main and (step % cfg.log_every == 0 or step == total):
                    now = time.perf_counter()
                    record: dict[str, Any] = {
                        "step": step,
                        "epoch": round(micro / iters_per_epoch, 4),
                        "loss": mean_loss,
                        "lr": lr,
                    }
                    tau = getattr(self.method, "last_tau", None)
                    if tau is not None:
                        record["ema_tau"] = float(tau)
                    record["samples_per_s"] = round(
                        steps_window * effective_batch / max(now - t_window, 1e-9), 2
                    )
                    record["elapsed_s"] = round(now - t_start, 3)
                    self._log(record)
                    t_window, steps_window = now, 0
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
                if step == total or (cfg.save_every is not None and step % cfg.save_every == 0):
                    saved = self._save(step, micro, iters_per_epoch, optimizer, scaler, generator)
                    last_ckpt = saved or self.run_dir / f"{CHECKPOINT_PREFIX}{step}.pth"
        finally:
            if progress is not None:
                progress.close()
            del batches

        debug_dir = os.environ.get(DEBUG_HASH_ENV)
        if debug_dir:
            Path(debug_dir).mkdir(parents=True, exist_ok=True)
            (Path(debug_dir) / f"param-hash-rank{dist.rank}.txt").write_text(
                parameter_hash(self.method) + "\n"
            )
        return TrainResult(self.run_dir, last_ckpt, step, total, losses)
