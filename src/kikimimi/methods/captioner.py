"""The captioning objective: teacher forcing of caption / answer tokens behind an audio prefix.

:class:`CaptionerMethod` owns a :class:`~kikimimi.models.captioning.PrefixMapper` and a causal language model
and gives the trainer the method interface (``forward(batch) -> {"loss"}``, ``param_groups``,
``export_official_state_dict``, ``on_after_step``, ``config_dict``). The audio encoder is not part of it:
the captioner trains on frozen frame features computed once (``kikimimi train-captioner``).

A frozen language model (the default) is held outside the module's registered children, so checkpoints and
``state_dict()`` hold only what trains (the mapper); ``.to(device)`` still moves it. With ``train_lm=True``
(small language models) the language model is a registered child and trains with the mapper. With ``lora``
(:class:`~kikimimi.models.captioning.LoraSettings`, needs ``peft``) the language model stays frozen and
outside, LoRA adapters are injected into it, and the adapter parameters — the same tensors, not copies — are
registered under ``lora.`` (:class:`LoraWeights`), so checkpoints hold the mapper and the adapters only.

Batch (from :class:`kikimimi.data.caption_qa.PrefixCaptionDataset`): ``frames [B, T, D]``, ``frame_mask [B, T]``,
``input_ids [B, L]``, ``attention_mask [B, L]``, ``labels [B, L]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kikimimi.models.captioning import LoraSettings, MapperConfig, PrefixMapper, add_lora, caption_loss
from kikimimi.optim import weight_decay_param_groups

__all__ = ["CaptionerMethod", "LoraWeights"]


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
    """

    config_only_keys = frozenset({"method"})

    def __init__(self, mapper_config: MapperConfig, lm: nn.Module, *, train_lm: bool = False,
                 lm_lr_scale: float = 1.0, lora: LoraSettings | dict | None = None) -> None:
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
        return {"loss": loss}

    def on_after_step(self, step: int, total_steps: int) -> None:  # nothing scheduled per step
        return None

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
