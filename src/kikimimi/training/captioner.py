"""Training a captioner with the pre-training loop (:class:`~kikimimi.training.trainer.Trainer`).

:func:`fit_captioner` takes frame features already computed by the frozen audio encoder (one ``[T, D]``
tensor per clip key), the (clip, question, answer) examples and the settings; it builds the
:class:`~kikimimi.methods.captioner.CaptionerMethod`, runs the trainer in ``run_dir`` (``checkpoint-<step>.pth``,
``log.jsonl`` with ``samples_per_s``, a progress bar; resumable) and returns the trained method. Writing the
captioner folder is the caller's job (:mod:`kikimimi.apps.captioning`).

Settings (a JSON dict stored in every checkpoint's ``args``): ``lm`` (spec), ``train_lm``, ``lora`` (``None`` or
:class:`~kikimimi.models.captioning.LoraSettings` fields: ``rank``, ``alpha``, ``targets``), ``mapper``
(:class:`~kikimimi.models.captioning.MapperConfig` fields but ``in_dim``/``lm_dim``), ``steps``, ``batch_size``,
``lr``, ``weight_decay``, ``warmup_steps``, ``seed``, ``device``, ``amp``, ``save_every``, ``max_tokens``,
``progress``, ``workers``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kikimimi.data.caption_qa import Example, PrefixCaptionDataset
from kikimimi.fileio import atomic_write_json
from kikimimi.methods.captioner import CaptionerMethod
from kikimimi.models.captioning import LoraSettings, MapperConfig, load_causal_lm
from kikimimi.training.trainer import TrainConfig, Trainer, TrainResult

__all__ = ["CAPTIONER_DEFAULTS", "CaptionerFit", "fit_captioner"]

#: default training settings of a captioner
CAPTIONER_DEFAULTS: dict[str, Any] = {
    "lm": "smollm2",
    "train_lm": False,
    "lm_lr_scale": 1.0,
    "lora": None,
    "mapper": {"prefix_len": 8, "width": 256, "depth": 2, "heads": 4, "max_frames": 512},
    "steps": 1000,
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "warmup_steps": None,
    "grad_clip": 1.0,
    "seed": 0,
    "device": "auto",
    "amp": "auto",
    "save_every": None,
    "keep_checkpoints": 2,
    "log_every": 10,
    "max_tokens": 128,
    "progress": True,
    "workers": 0,
}


@dataclass
class CaptionerFit:
    """Outcome of :func:`fit_captioner`: the trained method (on CPU), its tokenizer, the trainer result."""

    method: CaptionerMethod
    tokenizer: Any
    result: TrainResult
    settings: dict[str, Any]
    dataset: PrefixCaptionDataset


def fit_captioner(
    features: Mapping[str, torch.Tensor],
    examples: Sequence[Example],
    settings: Mapping[str, Any],
    run_dir: str | Path,
    *,
    resume: str | Path | None = None,
    lm: tuple[torch.nn.Module, Any] | None = None,
    notice: Callable[[str], None] | None = None,
) -> CaptionerFit:
    """Train (or continue) a captioner on frame features.

    Args:
        features: clip key → frame features ``[T, D]`` (float32) of the frozen audio encoder.
        examples: (key, question, answer) examples; those without features are dropped.
        settings: over :data:`CAPTIONER_DEFAULTS` (``lm`` spec, sizes, run length…); written to
            ``run_dir/config.json``.
        run_dir: the run folder (created). resume: a run folder or checkpoint to continue from (the
            settings must be those of the run).
        lm: an already loaded ``(language model, tokenizer)`` for ``settings["lm"]`` (else loaded here).

    Raises:
        ValueError: no usable example; invalid run settings (:class:`TrainConfig`).
    """
    s: dict[str, Any] = {**CAPTIONER_DEFAULTS, **dict(settings)}
    s["mapper"] = {**CAPTIONER_DEFAULTS["mapper"], **dict(settings.get("mapper") or {})}
    lora = LoraSettings.from_dict(s["lora"]) if s.get("lora") else None
    s["lora"] = lora.to_dict() if lora is not None else None
    model, tokenizer = lm if lm is not None else load_causal_lm(str(s["lm"]))
    dataset = PrefixCaptionDataset(examples, features, tokenizer, max_frames=int(s["mapper"]["max_frames"]),
                                   max_tokens=int(s["max_tokens"]))
    lm_dim = int(model.get_input_embeddings().weight.shape[1])
    mapper_cfg = MapperConfig(in_dim=dataset.dim, lm_dim=lm_dim, **{k: int(v) for k, v in s["mapper"].items()})
    torch.manual_seed(int(s["seed"]))
    method = CaptionerMethod(mapper_cfg, model, train_lm=bool(s["train_lm"]), lm_lr_scale=float(s["lm_lr_scale"]),
                             lora=lora)
    run_dir = Path(run_dir)
    steps = int(s["steps"])
    warmup = s["warmup_steps"] if s["warmup_steps"] is not None else max(1, steps // 20)
    size = f"K{mapper_cfg.prefix_len}-w{mapper_cfg.width}-d{mapper_cfg.depth}" + (f"-lora{lora.rank}" if lora else "")
    cfg = TrainConfig(
        method="captioner", size=size, steps=steps,
        batch_size=min(int(s["batch_size"]), len(dataset)), lr=float(s["lr"]), optimizer="adamw",
        betas=(0.9, 0.999), weight_decay=float(s["weight_decay"]), schedule="cosine", warmup_steps=int(warmup),
        grad_clip=s["grad_clip"], amp=str(s["amp"]), device=str(s["device"]), seed=int(s["seed"]),
        num_workers=int(s["workers"]), save_every=s["save_every"], keep_checkpoints=s["keep_checkpoints"],
        log_every=int(s["log_every"]), out_dir=str(run_dir), resume=str(resume) if resume else None,
        progress=bool(s["progress"]),
    )  # fmt: skip
    args = {"captioner": s, "mapper_config": mapper_cfg.to_dict(), "n_examples": len(dataset),
            "n_clips": len(dataset.features)}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", {**args, **cfg.to_dict()})
    result = Trainer(method, dataset, cfg, args=args, notice=notice).fit()
    method.to("cpu").eval()
    return CaptionerFit(method, tokenizer, result, s, dataset)
