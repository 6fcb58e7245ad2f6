"""Training a captioner with the pre-training loop (:class:`~kikimimi.training.trainer.Trainer`).

:func:`fit_captioner` takes frame features already computed by the frozen audio encoder (one ``[T, D]``
tensor per clip key), the (clip, question, answer) examples and the settings; it builds the
:class:`~kikimimi.methods.captioner.CaptionerMethod`, runs the trainer in ``run_dir`` (``checkpoint-<step>.pth``,
``log.jsonl`` with ``samples_per_s``, a progress bar; resumable) and returns the trained method. Writing the
captioner folder is the caller's job (:mod:`kikimimi.training.captioner_run`).

Settings: :class:`CaptionerSettings` (validated; their ``asdict`` is stored in every checkpoint's ``args`` and in
``config.json`` as ``captioner``): ``lm`` (spec), ``train_lm``, ``lora`` (``None`` or
:class:`~kikimimi.models.lora.LoraSettings` fields: ``rank``, ``alpha``, ``targets``), ``mapper``
(:class:`~kikimimi.models.prefix_mapper.MapperConfig` fields but ``in_dim``/``lm_dim``), ``steps``, ``batch_size``,
``lr``, ``weight_decay``, ``warmup_steps``, ``seed``, ``device``, ``amp``, ``save_every``, ``max_tokens``,
``progress``, ``workers``, ``prefix_norm``, ``divergence_patience``.

The recipe (issue 33: the documented SmolLM2 command diverged): prefix vectors scaled to the language model's
own token-embedding RMS (``prefix_norm``; :func:`~kikimimi.models.prefix_mapper.embedding_rms`), a linear
warm-up over a tenth of the run, gradient clipping at norm 1, a learning rate measured per training path
(:data:`DEFAULT_LR`) and a stop with one line naming ``--lr`` when the loss diverges
(:class:`~kikimimi.methods.captioner.DivergenceGuard`, or a NaN/Inf loss).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from kikimimi.data.caption_qa import Example, PrefixCaptionDataset
from kikimimi.fileio import atomic_write_json
from kikimimi.methods.captioner import CaptionerDivergedError, CaptionerMethod
from kikimimi.models.causal_lm import load_causal_lm
from kikimimi.models.lora import LoraSettings
from kikimimi.models.prefix_mapper import MapperConfig, embedding_rms
from kikimimi.training.settings import check_types
from kikimimi.training.trainer import TrainConfig, Trainer, TrainingDivergedError, TrainResult

__all__ = ["CAPTIONER_DEFAULTS", "DEFAULT_LR", "MAPPER_DEFAULTS", "CaptionerFit", "CaptionerSettings", "default_lr",
           "fit_captioner"]

#: the prefix mapper's default sizes (:class:`~kikimimi.models.prefix_mapper.MapperConfig` fields but the widths
#: of its input and of the language model)
MAPPER_DEFAULTS: dict[str, int] = {"prefix_len": 8, "width": 256, "depth": 2, "heads": 4, "max_frames": 512}

#: the learning rate when the setting ``lr`` is ``None`` (the default), per training path: the mapper alone on a
#: frozen language model, the mapper + LoRA adapters, the mapper + a small language model trained whole
#: (``train_lm``, ``--llm tiny``). Chosen by measurement (issue 33; 8 generated sound classes, tiny random M2D
#: frames, template "the sound of a <class>.", 96 training / 32 held-out clips; this recipe; 80 steps of 4 for
#: SmolLM2-135M, 400 steps of 16 for the tiny LM): held-out loss of the frozen SmolLM2 path 1.98 / 1.38 / 1.83 /
#: 2.12 at 1e-4 / 3e-4 / 1e-3 / 3e-3 (3e-3 spiked to 10.4 at the end of the warm-up); SmolLM2 + LoRA rank 8
#: 1.03 / 0.31 at 3e-4 / 1e-3; tiny LM trained whole: held-out class word 72 % / 78 % / 44 % / 12.5 % (chance)
#: at 3e-4 / 1e-3 / 3e-3 / 1e-2 (second data seed: 63 % at 1e-3, 47 % at 3e-3).
DEFAULT_LR: dict[str, float] = {"frozen": 3e-4, "lora": 1e-3, "train_lm": 1e-3}


@dataclass
class CaptionerSettings:
    """The training settings of a captioner, stored as ``args["captioner"]`` (their ``asdict``) in every checkpoint.

    Attributes:
        lm: the language model spec; train_lm: train all of it (else frozen); lm_lr_scale: its lr multiplier.
        lr: peak learning rate; ``None`` = :data:`DEFAULT_LR` of the training path (:func:`default_lr`).
        lora: ``None`` or :class:`~kikimimi.models.lora.LoraSettings` fields (``rank``, ``alpha``, ``targets``).
        mapper: :data:`MAPPER_DEFAULTS` keys (``prefix_len``, ``width``, ``depth``, ``heads``, ``max_frames``).
        steps, batch_size, weight_decay, warmup_steps (``None`` = a tenth of the run), grad_clip, seed,
        device, amp, save_every, keep_checkpoints, log_every, progress, workers: as in
        :class:`~kikimimi.training.trainer.TrainConfig`. max_tokens: longest target text in tokens.
        prefix_norm: scale the prefix vectors to the language model's token-embedding RMS (``False``: the plain
            linear output of captioners trained before issue 33).
        divergence_patience: stop when the smoothed loss stays above 1.5× its best (and ≥ 1 above it) for this
            many steps (:class:`~kikimimi.methods.captioner.DivergenceGuard`); ``None`` = never.

    Raises (on construction):
        ValueError: one line naming the setting: a wrong type, a value out of range, an unknown mapper key.
    """

    lm: str = "smollm2"
    train_lm: bool = False
    lm_lr_scale: float = 1.0
    lora: dict[str, Any] | None = None
    mapper: dict[str, int] = field(default_factory=lambda: dict(MAPPER_DEFAULTS))
    steps: int = 1000
    batch_size: int = 16
    lr: float | None = None
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    save_every: int | None = None
    keep_checkpoints: int | None = 2
    log_every: int = 10
    max_tokens: int = 128
    progress: bool = True
    workers: int = 0
    prefix_norm: bool = True
    divergence_patience: int | None = 20

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("steps", "batch_size", "log_every", "max_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"setting {name!r} must be > 0, got {getattr(self, name)!r}")
        for name in ("lr", "lm_lr_scale", "weight_decay", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"setting {name!r} must be >= 0, got {getattr(self, name)!r}")
        unknown = sorted(set(self.mapper) - set(MAPPER_DEFAULTS))
        if self.divergence_patience is not None and self.divergence_patience <= 0:
            raise ValueError(f"setting 'divergence_patience' must be > 0 or None, got {self.divergence_patience!r}")
        if unknown:
            raise ValueError(f"setting 'mapper': unknown key {unknown[0]!r} (known: {', '.join(MAPPER_DEFAULTS)})")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CaptionerSettings:
        """Settings over the defaults: ``mapper`` over :data:`MAPPER_DEFAULTS`, ``lora`` with its defaults filled in.

        Raises:
            ValueError: an unknown setting (naming it) or an invalid value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise ValueError(f"captioner settings: unknown setting {unknown[0]!r}")
        given = dict(values)
        given["mapper"] = {**MAPPER_DEFAULTS, **dict(values.get("mapper") or {})}
        given["lora"] = LoraSettings.from_dict(values["lora"]).to_dict() if values.get("lora") else None
        return cls(**given)


#: default training settings of a captioner, as a dict (:class:`CaptionerSettings`)
CAPTIONER_DEFAULTS: dict[str, Any] = asdict(CaptionerSettings())


def default_lr(settings: CaptionerSettings) -> float:
    """The learning rate a run uses: ``settings.lr``, else :data:`DEFAULT_LR` of its path (``train_lm``,
    ``lora`` or the frozen language model)."""
    if settings.lr is not None:
        return float(settings.lr)
    return DEFAULT_LR["train_lm" if settings.train_lm else "lora" if settings.lora else "frozen"]


@dataclass
class CaptionerFit:
    """Outcome of :func:`fit_captioner`: the trained method (on CPU), its tokenizer, the trainer result."""

    method: CaptionerMethod
    tokenizer: Any
    result: TrainResult
    settings: CaptionerSettings
    dataset: PrefixCaptionDataset


def fit_captioner(
    features: Mapping[str, torch.Tensor],
    examples: Sequence[Example],
    settings: Mapping[str, Any] | CaptionerSettings,
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
        settings: a :class:`CaptionerSettings` or a dict over its defaults (``lm`` spec, sizes, run length…);
            written to ``run_dir/config.json``.
        run_dir: the run folder (created). resume: a run folder or checkpoint to continue from (the
            settings must be those of the run).
        lm: an already loaded ``(language model, tokenizer)`` for the settings' ``lm`` (else loaded here).

    Raises:
        ValueError: no usable example; an unknown or invalid setting (one line naming it).
        kikimimi.training.trainer.TrainingDivergedError: the loss became NaN/Inf or diverged (one line naming
            the learning rate to lower, ``--lr``).
    """
    cs = settings if isinstance(settings, CaptionerSettings) else CaptionerSettings.from_dict(settings)
    lora = LoraSettings.from_dict(cs.lora) if cs.lora else None
    model, tokenizer = lm if lm is not None else load_causal_lm(cs.lm)
    dataset = PrefixCaptionDataset(examples, features, tokenizer, max_frames=int(cs.mapper["max_frames"]),
                                   max_tokens=int(cs.max_tokens))
    lm_dim = int(model.get_input_embeddings().weight.shape[1])
    out_scale = embedding_rms(model) if cs.prefix_norm else 0.0  # before LoRA or training touch the model
    mapper_cfg = MapperConfig(in_dim=dataset.dim, lm_dim=lm_dim, out_scale=out_scale,
                              **{k: int(v) for k, v in cs.mapper.items()})
    torch.manual_seed(int(cs.seed))
    method = CaptionerMethod(mapper_cfg, model, train_lm=bool(cs.train_lm), lm_lr_scale=float(cs.lm_lr_scale),
                             lora=lora, divergence_patience=cs.divergence_patience)
    run_dir = Path(run_dir)
    steps = int(cs.steps)
    warmup = cs.warmup_steps if cs.warmup_steps is not None else max(1, steps // 10)
    lr = default_lr(cs)
    size = f"K{mapper_cfg.prefix_len}-w{mapper_cfg.width}-d{mapper_cfg.depth}" + (f"-lora{lora.rank}" if lora else "")
    cfg = TrainConfig(
        method="captioner", size=size, steps=steps,
        batch_size=min(int(cs.batch_size), len(dataset)), lr=lr, optimizer="adamw",
        betas=(0.9, 0.999), weight_decay=float(cs.weight_decay), schedule="cosine", warmup_steps=int(warmup),
        grad_clip=cs.grad_clip, amp=str(cs.amp), device=str(cs.device), seed=int(cs.seed),
        num_workers=int(cs.workers), save_every=cs.save_every, keep_checkpoints=cs.keep_checkpoints,
        log_every=int(cs.log_every), out_dir=str(run_dir), resume=str(resume) if resume else None,
        progress=bool(cs.progress),
    )  # fmt: skip
    args = {"captioner": asdict(cs), "mapper_config": mapper_cfg.to_dict(), "n_examples": len(dataset),
            "n_clips": len(dataset.features)}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", {**args, **cfg.to_dict()})
    try:
        result = Trainer(method, dataset, cfg, args=args, notice=notice).fit()
    except (CaptionerDivergedError, TrainingDivergedError) as exc:
        raise TrainingDivergedError(diverged_message(exc, lr, run_dir)) from exc
    method.to("cpu").eval()
    return CaptionerFit(method, tokenizer, result, cs, dataset)


def diverged_message(exc: BaseException, lr: float, run_dir: str | Path) -> str:
    """One line for a diverged captioner run: what happened, and the learning rate to lower (``--lr``)."""
    what = str(exc).split(";")[0].removeprefix("the captioner's training loss diverged: ")
    return (f"captioner training in '{run_dir}' diverged ({what}); lower the learning rate: --lr (setting 'lr') "
            f"was {lr:g}, try {lr / 3:.2g}")
