"""LoRA adapters on a frozen language model (``peft``, the ``lora`` extra): settings, injection, their tensors.

:func:`add_lora` freezes a model and injects adapters in place (the model keeps its class and ``forward``);
:func:`lora_state_dict` / :func:`load_lora_state_dict` move the adapter tensors in and out by parameter name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kikimimi.models.text import TextEncoderError

__all__ = ["LORA_EXTRA_HINT", "LoraSettings", "add_lora", "is_lora_parameter", "load_lora_state_dict",
           "lora_state_dict", "require_peft"]

#: what to install when peft (LoRA adapters) is missing
LORA_EXTRA_HINT = 'pip install "kikimimi[lora]"'


@dataclass
class LoraSettings:
    """LoRA adapters on a frozen language model (``peft``, the ``lora`` extra; JSON in the captioner folder).

    Attributes:
        rank: r of the low-rank update ``B·A`` (> 0). alpha: its scale numerator (update × alpha / rank);
            ``None`` = ``rank`` (scale 1). targets: names of the linear layers that get adapters (peft's
            ``target_modules``: a name matches a module whose path ends with it), Llama-style attention
            projections by default.
    """

    rank: int
    alpha: float | None = None
    targets: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        self.rank = int(self.rank)
        self.alpha = float(self.rank if self.alpha is None else self.alpha)
        targets = [self.targets] if isinstance(self.targets, str) else list(self.targets)
        self.targets = tuple(t.strip() for part in targets for t in str(part).split(",") if t.strip())
        if self.rank <= 0:
            raise ValueError(f"LoRA rank must be > 0, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha:g}")
        if not self.targets:
            raise ValueError("LoRA needs at least one target module name (e.g. q_proj,v_proj)")

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraSettings:
        return cls(int(data["rank"]), data.get("alpha"), tuple(data.get("targets") or cls.targets))


def require_peft() -> Any:
    """The ``peft`` module; raises :class:`TextEncoderError` naming ``pip install "kikimimi[lora]"`` without it."""
    try:
        import peft
    except ImportError as exc:
        raise TextEncoderError(f"LoRA adapters need the package 'peft' ({exc}); {LORA_EXTRA_HINT}") from exc
    return peft


def is_lora_parameter(name: str) -> bool:
    """Whether a parameter name of a language model belongs to a LoRA adapter (``…lora_A.default.weight``)."""
    return ".lora_" in f".{name}"


def add_lora(lm: nn.Module, settings: LoraSettings) -> dict[str, nn.Parameter]:
    """Freeze ``lm`` and inject LoRA adapters into it in place (``peft.inject_adapter_in_model``: the model
    keeps its class, its ``forward`` and ``generate``). Returns the adapter parameters (name → parameter), the
    only ones left trainable; ``B`` starts at zero, so the model's outputs are unchanged until it trains.

    Raises:
        TextEncoderError: peft is missing (the message names ``pip install "kikimimi[lora]"``).
        ValueError: no module of ``lm`` matches ``settings.targets``.
    """
    peft = require_peft()
    config = peft.LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0,
                             target_modules=list(settings.targets), bias="none")
    for p in lm.parameters():
        p.requires_grad_(False)
    try:
        peft.inject_adapter_in_model(config, lm)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"LoRA targets {list(settings.targets)} do not fit {type(lm).__name__} ({exc}); its linear "
                         f"layers are named {names}") from exc
    params = {n: p for n, p in lm.named_parameters() if is_lora_parameter(n)}
    if not params:
        raise ValueError(f"LoRA targets {list(settings.targets)}: no adapter was added to {type(lm).__name__}")
    for name, p in lm.named_parameters():
        p.requires_grad_(name in params)
    return params


def lora_state_dict(lm: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA adapter tensors of ``lm`` (CPU copies, keyed by their parameter names)."""
    return {n: p.detach().cpu().contiguous().clone() for n, p in lm.named_parameters() if is_lora_parameter(n)}


def load_lora_state_dict(lm: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors (:func:`lora_state_dict`) into the adapters of ``lm`` (added by :func:`add_lora`).

    Raises:
        ValueError: the names or shapes differ from the model's adapters.
    """
    own = {n: p for n, p in lm.named_parameters() if is_lora_parameter(n)}
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"LoRA weights do not fit the language model's adapters: {len(missing)} missing "
                         f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
    with torch.no_grad():
        for name, p in own.items():
            if tuple(state[name].shape) != tuple(p.shape):
                raise ValueError(f"LoRA weight {name}: shape {tuple(state[name].shape)}, expected {tuple(p.shape)}")
            p.copy_(state[name].to(p.device, p.dtype))
