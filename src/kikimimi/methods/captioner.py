"""The captioning objective: teacher forcing of caption / answer tokens behind an audio prefix.

:class:`CaptionerMethod` owns a :class:`~kikimimi.models.prefix_mapper.PrefixMapper` and a causal language model
and gives the trainer the method interface (``forward(batch) -> {"loss"}``, ``param_groups``,
``export_official_state_dict``, ``on_after_step``, ``config_dict``). The audio encoder is not part of it:
the captioner trains on frozen frame features computed once (``kikimimi train-captioner``).

A frozen language model (the default) is held outside the module's registered children, so checkpoints and
``state_dict()`` hold only what trains (the mapper); ``.to(device)`` still moves it. With ``train_lm=True``
(small language models) the language model is a registered child and trains with the mapper. With ``lora``
(:class:`~kikimimi.models.lora.LoraSettings`, needs ``peft``) the language model stays frozen and
outside, LoRA adapters are injected into it, and the adapter parameters — the same tensors, not copies — are
registered under ``lora.`` (:class:`LoraWeights`), so checkpoints hold the mapper and the adapters only.

Divergence: :class:`DivergenceGuard` watches the training loss after every optimiser step
(``on_after_step``) and stops the run with :class:`CaptionerDivergedError` (one line) when its smoothed value
stays far above its best for a number of steps; a NaN/Inf loss is stopped by the trainer itself.

Batch (from :class:`kikimimi.data.caption_qa.PrefixCaptionDataset`): ``frames [B, T, D]``, ``frame_mask [B, T]``,
``input_ids [B, L]``, ``attention_mask [B, L]``, ``labels [B, L]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kikimimi.models.caption_loss import caption_loss
from kikimimi.models.lora import LoraSettings, add_lora
from kikimimi.models.prefix_mapper import MapperConfig, PrefixMapper
from kikimimi.optim import weight_decay_param_groups

__all__ = ["CaptionerDivergedError", "CaptionerMethod", "DivergenceGuard", "LoraWeights"]


class CaptionerDivergedError(RuntimeError):
    """The captioner's smoothed training loss rose far above its best and stayed there (one-line message;
    :func:`kikimimi.training.captioner.fit_captioner` turns it into a message naming the setting to lower)."""


class DivergenceGuard:
    """Stop a run whose loss diverges: an exponential moving average of the per-step loss (``smoothing``) is
    compared with its lowest value so far; ``patience`` steps in a row above ``factor`` × that best *and* at least
    ``min_rise`` above it (so noise near a loss of 0 never trips it) is a divergence.

    The first ``patience`` steps only feed the average (its start is noisy). ``update`` returns ``None`` or a
    one-line description ("smoothed loss 9.81 at step 90, 2.6× its best 3.77 (step 41) for 20 steps").
    """

    def __init__(self, *, patience: int = 20, factor: float = 1.5, min_rise: float = 1.0,
                 smoothing: float = 0.9) -> None:
        self.patience, self.factor, self.min_rise, self.smoothing = int(patience), factor, min_rise, smoothing
        self.ema: float | None = None
        self.best = (float("inf"), 0)
        self.seen = 0
        self.above = 0

    def update(self, step: int, loss: float) -> str | None:
        self.seen += 1
        self.ema = loss if self.ema is None else self.smoothing * self.ema + (1 - self.smoothing) * loss
        if self.seen <= self.patience:
            if self.seen == self.patience:
                self.best = (self.ema, step)
            return None
        if self.ema < self.best[0]:
            self.best = (self.ema, step)
        best = self.best[0]
        self.above = self.above + 1 if self.ema > max(self.factor * best, best + self.min_rise) else 0
        if self.above < self.patience:
            return None
        return (f"smoothed loss {self.ema:.2f} at step {step}, {self.ema / max(best, 1e-12):.1f}× its best "
                f"{best:.2f} (step {self.best[1]}) for {self.above} steps")


class LoraWeights(nn.Module):
    """The LoRA adapter parameters of a language model, registered here (shared, not copied) under their names
    with ``.`` written ``__`` (module attribute names cannot hold dots); ``names`` maps back."""

    def __init__(self, params: dict[str, nn.Parameter]) -> None:
        super().__init__()
        self.names: dict[str, str] = {}
        for name, p in params.items():
            key = name.replace(".", "__")
            self.register_parameter(key, p)
            self.names[key] = name


class CaptionerMethod(nn.Module):
    """Mapper (trained) + causal language model (frozen unless ``train_lm``).

    Args:
        mapper_config: sizes of the mapper. lm: a Hugging Face causal LM (``get_input_embeddings``,
            ``forward(inputs_embeds=…, attention_mask=…)``). train_lm: train the language model too.
        lm_lr_scale: learning-rate factor of the language model's parameters (or its LoRA adapters) when
            they train.
        lora: LoRA adapters on the frozen language model (``peft``; not with ``train_lm``).
        divergence_patience: steps of a diverged smoothed loss before training stops (:class:`DivergenceGuard`);
            ``None`` = never stop (a NaN/Inf loss still stops the trainer).
    """

    config_only_keys = frozenset({"method"})

    def __init__(self, mapper_config: MapperConfig, lm: nn.Module, *, train_lm: bool = False,
                 lm_lr_scale: float = 1.0, lora: LoraSettings | dict | None = None,
                 divergence_patience: int | None = 20) -> None:
        super().__init__()
        if isinstance(lora, dict):
            lora = LoraSettings.from_dict(lora)
        if lora is not None and train_lm:
            raise ValueError("LoRA adapters train on a frozen language model; train_lm trains all of it — "
                             "choose one")
        self.mapper = PrefixMapper(mapper_config)
        self.train_lm = bool(train_lm)
        self.lm_lr_scale = float(lm_lr_scale)
        self.lora_settings = lora
        self.guard = DivergenceGuard(patience=divergence_patience) if divergence_patience else None
        self._step_losses: list[torch.Tensor] = []
        if self.train_lm:
            self.lm = lm
        else:
            for p in lm.parameters():
                p.requires_grad_(False)
            self._frozen = [lm.eval()]  # a list hides it from state_dict(), parameters() and the optimiser
            if lora is not None:
                self.lora = LoraWeights(add_lora(lm, lora))

    @property
    def language_model(self) -> nn.Module:
        return self.lm if self.train_lm else self._frozen[0]

    def _apply(self, fn: Any, recurse: bool = True) -> CaptionerMethod:  # .to(), .cuda(), .float() …
        super()._apply(fn, recurse)
        if not self.train_lm:
            self._frozen[0]._apply(fn)
        return self

    def train(self, mode: bool = True) -> CaptionerMethod:
        super().train(mode)
        if not self.train_lm:
            self._frozen[0].eval()  # a frozen model keeps eval mode (no dropout)
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = caption_loss(self.mapper, self.language_model, batch["frames"], batch["frame_mask"],
                            batch["input_ids"], batch["attention_mask"], batch["labels"])
        if self.training and torch.is_grad_enabled() and self.guard is not None:
            self._step_losses.append(loss.detach())
        return {"loss": loss}

    def on_after_step(self, step: int, total_steps: int) -> None:
        """Feed the step's mean training loss to the divergence guard.

        Raises:
            CaptionerDivergedError: the smoothed loss diverged (the message says how; the caller names the
                setting to lower).
        """
        if self.guard is None or not self._step_losses:
            return
        loss = float(torch.stack(self._step_losses).float().mean())
        self._step_losses.clear()
        problem = self.guard.update(step, loss)
        if problem is not None:
            raise CaptionerDivergedError(f"the captioner's training loss diverged: {problem}")

    def param_groups(self, weight_decay: float) -> list[dict]:
        groups = weight_decay_param_groups(self.mapper, weight_decay)
        trained_lm = self.lm if self.train_lm else getattr(self, "lora", None)
        if trained_lm is not None:
            for g in weight_decay_param_groups(trained_lm, weight_decay):
                groups.append({**g, "lr_scale": self.lm_lr_scale})
        return groups

    def export_official_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trained tensor (``mapper.*``, and ``lm.*`` when the language model trains, ``lora.*`` with
        adapters)."""
        return {k: v.detach() for k, v in self.state_dict().items()}

    def config_dict(self) -> dict[str, Any]:
        return {"method": "captioner", "mapper": self.mapper.config.to_dict(), "train_lm": self.train_lm,
                "lm_lr_scale": self.lm_lr_scale,
                "lora": self.lora_settings.to_dict() if self.lora_settings is not None else None}
