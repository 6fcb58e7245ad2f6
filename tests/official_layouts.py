"""Random-weight state dicts and files in every official NTT checkpoint layout (test helper).

Built only from the key lists and shapes in docs/reference.md (§5, §4.2); deliberately does NOT import kikimimi's
model classes, so tests that load these dicts check our models against the documented layout rather than
against themselves.

Sizes: ``embed_dim`` D, ``depth`` blocks, ``input_size`` ``(F, T)`` in mel bins / frames, ``patch_size``
``(f, t)``; the patch grid is ``(F // f, T // t)`` and ``pos_embed`` is ``[1, 1 + Fg*Tg, D]``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

Tensor = torch.Tensor
State = "OrderedDict[str, Tensor]"

BLOCK_KEYS = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
)  # fmt: skip
#: Documented released-file norm stats of M2D-CLAP 2025 (docs/reference.md §3).
CLAP2025_NORM_STATS = (-7.261779308319092, 4.3511505126953125)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


_UNINITIALISED = False


@contextlib.contextmanager
def uninitialised() -> Iterator[None]:
    """Inside this block tensors are allocated but not filled (fast key/shape checks at base size)."""
    global _UNINITIALISED
    previous, _UNINITIALISED = _UNINITIALISED, True
    try:
        yield
    finally:
        _UNINITIALISED = previous


def _rand(g: torch.Generator, *shape: int, scale: float = 0.02) -> Tensor:
    if _UNINITIALISED:
        return torch.empty(*shape)
    return torch.randn(*shape, generator=g) * scale


def _block(prefix: str, dim: int, mlp_ratio: float, g: torch.Generator) -> dict[str, Tensor]:
    hidden = int(dim * mlp_ratio)
    return {
        f"{prefix}norm1.weight": 1.0 + _rand(g, dim),
        f"{prefix}norm1.bias": _rand(g, dim),
        f"{prefix}attn.qkv.weight": _rand(g, 3 * dim, dim),
        f"{prefix}attn.qkv.bias": _rand(g, 3 * dim),
        f"{prefix}attn.proj.weight": _rand(g, dim, dim),
        f"{prefix}attn.proj.bias": _rand(g, dim),
        f"{prefix}norm2.weight": 1.0 + _rand(g, dim),
        f"{prefix}norm2.bias": _rand(g, dim),
        f"{prefix}mlp.fc1.weight": _rand(g, hidden, dim),
        f"{prefix}mlp.fc1.bias": _rand(g, hidden),
        f"{prefix}mlp.fc2.weight": _rand(g, dim, hidden),
        f"{prefix}mlp.fc2.bias": _rand(g, dim),
    }


def num_patches(input_size: tuple[int, int], patch_size: tuple[int, int]) -> int:
    """``Fg * Tg`` for the given input and patch sizes (floor division, as the official code)."""
    return (input_size[0] // patch_size[0]) * (input_size[1] // patch_size[1])


def m2d_encoder_state(
    embed_dim: int = 768,
    depth: int = 12,
    input_size: tuple[int, int] = (80, 608),
    patch_size: tuple[int, int] = (16, 16),
    norm_stats: bool | tuple[float, float] = True,
    mlp_ratio: float = 4.0,
    seed: int = 0,
) -> OrderedDict[str, Tensor]:
    """Encoder-only (``*_enconly``) state: 4 + 12·depth + 2 tensors (150 for base) + ``norm_stats``.

    ``norm_stats``: True → a random plausible ``[mean, std]``; a tuple → that value; False → absent.
    """
    g = _gen(seed)
    n = num_patches(input_size, patch_size)
    state: OrderedDict[str, Tensor] = OrderedDict()
    if norm_stats is not False:
        stats = (-7.0 + float(_rand(g, 1, scale=0.5)), 4.0 + abs(float(_rand(g, 1, scale=0.5))))
        state["norm_stats"] = torch.tensor(stats if norm_stats is True else norm_stats, dtype=torch.float32)
    state["cls_token"] = _rand(g, 1, 1, embed_dim)
    state["pos_embed"] = _rand(g, 1, 1 + n, embed_dim, scale=0.5)
    state["patch_embed.proj.weight"] = _rand(g, embed_dim, 1, *patch_size)
    state["patch_embed.proj.bias"] = _rand(g, embed_dim)
    for i in range(depth):
        state.update(_block(f"blocks.{i}.", embed_dim, mlp_ratio, g))
    state["norm.weight"] = 1.0 + _rand(g, embed_dim)
    state["norm.bias"] = _rand(g, embed_dim)
    return state


def m2d_full_state(
    embed_dim: int = 768,
    depth: int = 12,
    input_size: tuple[int, int] = (80, 608),
    patch_size: tuple[int, int] = (16, 16),
    norm_stats: bool | tuple[float, float] = True,
    decoder_dim: int = 512,
    decoder_depth: int = 8,
    offline_dim: int | None = None,
    seed: int = 0,
) -> OrderedDict[str, Tensor]:
    """Full M2D model (``checkpoint-300.pth['model']``): encoder + predictor + target network.

    400 tensors for base with 8 predictor blocks (+1 with ``norm_stats``). ``offline_dim`` adds the
    M2D-X/AS/S ``offline_predictor`` Linear(Fg·D → offline_dim).
    """
    g = _gen(seed + 1)
    n = num_patches(input_size, patch_size)
    state = m2d_encoder_state(embed_dim, depth, input_size, patch_size, norm_stats, seed=seed)
    state["mask_token"] = _rand(g, 1, 1, decoder_dim)
    state["decoder_pos_embed"] = _rand(g, 1, 1 + n, decoder_dim, scale=0.5)
    state["decoder_embed.weight"] = _rand(g, decoder_dim, embed_dim)
    state["decoder_embed.bias"] = _rand(g, decoder_dim)
    for i in range(decoder_depth):
        state.update(_block(f"decoder_blocks.{i}.", decoder_dim, 4.0, g))
    state["decoder_norm.weight"] = 1.0 + _rand(g, decoder_dim)
    state["decoder_norm.bias"] = _rand(g, decoder_dim)
    state["decoder_pred.weight"] = _rand(g, embed_dim, decoder_dim)
    state["decoder_pred.bias"] = _rand(g, embed_dim)
    for i in range(depth):
        state.update(_block(f"target_blocks.{i}.", embed_dim, 4.0, g))
    state["target_norm.weight"] = 1.0 + _rand(g, embed_dim)
    state["target_norm.bias"] = _rand(g, embed_dim)
    if offline_dim is not None:
        fg = input_size[0] // patch_size[0]
        state["offline_predictor.weight"] = _rand(g, offline_dim, fg * embed_dim)
        state["offline_predictor.bias"] = _rand(g, offline_dim)
    return state


def clap2024_proj_state(
    embed_dim: int = 768, text_dim: int | None = None, seed: int = 0
) -> dict[str, Tensor]:
    """2024 CLAP extras: ``logit_scale`` + ``audio_proj.{0,2}`` MLP (+ ``text_proj`` if text_dim ≠ D)."""
    g = _gen(seed + 2)
    state: dict[str, Tensor] = {
        "logit_scale": torch.tensor(float(np.log(1 / 0.07))),
        "audio_proj.0.weight": _rand(g, embed_dim, embed_dim),
        "audio_proj.0.bias": _rand(g, embed_dim),
        "audio_proj.2.weight": _rand(g, embed_dim, embed_dim),
        "audio_proj.2.bias": _rand(g, embed_dim),
    }
    if text_dim is not None and text_dim != embed_dim:
        state["text_proj.weight"] = _rand(g, embed_dim, text_dim)
        state["text_proj.bias"] = _rand(g, embed_dim)
    return state


def clap2024(
    embed_dim: int = 768,
    depth: int = 12,
    input_size: tuple[int, int] = (80, 608),
    patch_size: tuple[int, int] = (16, 16),
    norm_stats: bool | tuple[float, float] = False,
    decoder_dim: int = 512,
    decoder_depth: int = 8,
    text_dim: int | None = None,
    seed: int = 0,
) -> OrderedDict[str, Tensor]:
    """Full M2D-CLAP 2024 model state: 405 tensors for base (+1 with ``norm_stats``; the release has none)."""
    state = m2d_full_state(
        embed_dim, depth, input_size, patch_size, norm_stats, decoder_dim, decoder_depth, seed=seed
    )
    state.update(clap2024_proj_state(embed_dim, text_dim, seed))
    return state


def clap2025_proj_state(
    embed_dim: int = 768,
    sem_depth: int = 1,
    sem_mlp_ratio: float = 1.0,
    text_proj: str | None = None,
    text_dim: int = 4096,
    seed: int = 0,
) -> dict[str, Tensor]:
    """2025 semantic projector ``audio_proj.sem_token/sem_blocks.N/norm`` (+ optional ``text_proj``).

    ``text_proj``: None, ``"linear"`` (``text_proj.weight/bias``) or ``"mlp"`` (``text_proj.0/2``).
    """
    g = _gen(seed + 3)
    state: dict[str, Tensor] = {"audio_proj.sem_token": _rand(g, 1, 1, embed_dim)}
    for i in range(sem_depth):
        state.update(_block(f"audio_proj.sem_blocks.{i}.", embed_dim, sem_mlp_ratio, g))
    state["audio_proj.norm.weight"] = 1.0 + _rand(g, embed_dim)
    state["audio_proj.norm.bias"] = _rand(g, embed_dim)
    if text_proj == "linear":
        state["text_proj.weight"] = _rand(g, embed_dim, text_dim)
        state["text_proj.bias"] = _rand(g, embed_dim)
    elif text_proj == "mlp":
        state["text_proj.0.weight"] = _rand(g, embed_dim, text_dim)
        state["text_proj.0.bias"] = _rand(g, embed_dim)
        state["text_proj.2.weight"] = _rand(g, embed_dim, embed_dim)
        state["text_proj.2.bias"] = _rand(g, embed_dim)
    elif text_proj is not None:
        raise ValueError(f"text_proj must be None, 'linear' or 'mlp', got {text_proj!r}")
    return state


def text_encoder_state(hidden: int = 32, vocab: int = 50, seed: int = 0) -> dict[str, Tensor]:
    """A few BERT-like tensors standing in for the bundled text encoder (``text_encoder.`` prefix removed)."""
    g = _gen(seed + 4)
    return {
        "embeddings.word_embeddings.weight": _rand(g, vocab, hidden),
        "embeddings.LayerNorm.weight": 1.0 + _rand(g, hidden),
        "encoder.layer.0.attention.self.query.weight": _rand(g, hidden, hidden),
        "pooler.dense.weight": _rand(g, hidden, hidden),
    }


def clap2025(
    embed_dim: int = 768,
    depth: int = 12,
    input_size: tuple[int, int] = (80, 1001),
    patch_size: tuple[int, int] = (16, 16),
    norm_stats: bool | tuple[float, float] = CLAP2025_NORM_STATS,
    sem_depth: int = 1,
    sem_mlp_ratio: float = 1.0,
    text_proj: str | None = None,
    text_encoder: bool = True,
    seed: int = 0,
) -> OrderedDict[str, Tensor]:
    """M2D-CLAP 2025 ``checkpoint['model']``: ``backbone.`` + encoder/projector (166 for base) and
    ``text_encoder.*`` tensors when ``text_encoder`` (the ``TI`` variant)."""
    inner = m2d_encoder_state(embed_dim, depth, input_size, patch_size, norm_stats, seed=seed)
    inner.update(clap2025_proj_state(embed_dim, sem_depth, sem_mlp_ratio, text_proj, seed=seed))
    state: OrderedDict[str, Tensor] = OrderedDict((f"backbone.{k}", v) for k, v in inner.items())
    if text_encoder:
        state.update((f"text_encoder.{k}", v) for k, v in text_encoder_state(seed=seed).items())
    return state


EVAR_PREFIX = "module.ar.runtime.backbone."


def evar_finetuned(
    embed_dim: int = 768,
    depth: int = 12,
    input_size: tuple[int, int] = (80, 1001),
    patch_size: tuple[int, int] = (16, 16),
    norm_stats: bool | tuple[float, float] = True,
    n_classes: int | None = 527,
    n_fft: int = 400,
    n_mels: int = 80,
    seed: int = 0,
) -> OrderedDict[str, Tensor]:
    """EVAR fine-tuned save: ``module.ar.runtime.backbone.`` encoder, ``module.ar.runtime.to_spec.*``
    front-end buffers, and (``n_classes``) a ``module.head`` BatchNorm1d(Fg·D, affine=False) + Linear."""
    g = _gen(seed + 5)
    state: OrderedDict[str, Tensor] = OrderedDict()
    bins = n_fft // 2 + 1
    state["module.ar.runtime.to_spec.mel_basis"] = torch.rand(n_mels, bins, generator=g)
    state["module.ar.runtime.to_spec.stft.wsin"] = _rand(g, bins, 1, n_fft)
    state["module.ar.runtime.to_spec.stft.wcos"] = _rand(g, bins, 1, n_fft)
    state["module.ar.runtime.to_spec.stft.window_mask"] = torch.ones(n_fft)
    for k, v in m2d_encoder_state(embed_dim, depth, input_size, patch_size, norm_stats, seed=seed).items():
        state[EVAR_PREFIX + k] = v
    if n_classes is not None:
        feat = (input_size[0] // patch_size[0]) * embed_dim
        state["module.head.norm.running_mean"] = _rand(g, feat, scale=1.0)
        state["module.head.norm.running_var"] = 0.5 + torch.rand(feat, generator=g)
        state["module.head.norm.num_batches_tracked"] = torch.tensor(3124, dtype=torch.int64)
        state["module.head.mlp.mlp.0.weight"] = _rand(g, n_classes, feat)
        state["module.head.mlp.mlp.0.bias"] = _rand(g, n_classes)
    return state


def _bn(prefix: str, ch: int, g: torch.Generator, tracked: int) -> dict[str, Tensor]:
    return {
        f"{prefix}weight": 1.0 + _rand(g, ch, scale=0.1),
        f"{prefix}bias": _rand(g, ch, scale=0.1),
        f"{prefix}running_mean": _rand(g, ch, scale=0.5),
        f"{prefix}running_var": 0.5 + torch.rand(ch, generator=g),
        f"{prefix}num_batches_tracked": torch.tensor(tracked, dtype=torch.int64),
    }


def _conv(prefix: str, cin: int, cout: int, g: torch.Generator) -> dict[str, Tensor]:
    return {
        f"{prefix}weight": _rand(g, cout, cin, 3, 3, scale=0.2),
        f"{prefix}bias": _rand(g, cout, scale=0.1),
    }


def byola_v1(d: int = 512, n_mels: int = 64, seed: int = 0) -> OrderedDict[str, Tensor]:
    """BYOL-A v1 ``AudioNTT2020`` state dict (25 tensors): 3 conv/BN blocks, ``fc.0`` [d, 64·n_mels/8],
    ``fc.3`` [d, d]."""
    g = _gen(seed + 6)
    state: OrderedDict[str, Tensor] = OrderedDict()
    for conv, cin in ((0, 1), (4, 64), (8, 64)):
        state.update(_conv(f"features.{conv}.", cin, 64, g))
        state.update(_bn(f"features.{conv + 1}.", 64, g, 1534402))
    state["fc.0.weight"] = _rand(g, d, 64 * (n_mels // 8), scale=0.05)
    state["fc.0.bias"] = _rand(g, d)
    state["fc.3.weight"] = _rand(g, d, d, scale=0.05)
    state["fc.3.bias"] = _rand(g, d)
    return state


def byola_v2(n_mels: int = 64, mlp_d: int = 2048, d: int = 3072, seed: int = 0) -> OrderedDict[str, Tensor]:
    """BYOL-A v2 ``AudioNTT2022`` state dict (18 tensors): 2 conv/BN blocks, ``fc.0`` [mlp_d, 64·n_mels/4],
    ``fc.3`` [d − conv_d, mlp_d]; frame feature = conv_d + (d − conv_d) = d."""
    g = _gen(seed + 7)
    conv_d = 64 * (n_mels // 4)
    state: OrderedDict[str, Tensor] = OrderedDict()
    for conv, cin in ((0, 1), (4, 64)):
        state.update(_conv(f"features.{conv}.", cin, 64, g))
        state.update(_bn(f"features.{conv + 1}.", 64, g, 1000))
    state["fc.0.weight"] = _rand(g, mlp_d, conv_d, scale=0.05)
    state["fc.0.bias"] = _rand(g, mlp_d)
    state["fc.3.weight"] = _rand(g, d - conv_d, mlp_d, scale=0.05)
    state["fc.3.bias"] = _rand(g, d - conv_d)
    return state


def prefixed(state: dict[str, Tensor], prefix: str) -> OrderedDict[str, Tensor]:
    """``{prefix + key: tensor}`` (e.g. Lightning-style ``model.online_net.`` wrappers)."""
    return OrderedDict((prefix + k, v) for k, v in state.items())


# ------------------------------------------------------------------------------------------- writers
def training_args(**overrides: Any) -> argparse.Namespace:
    """An ``args`` Namespace like ``train_audio.py`` saves, with numpy scalars among the values."""
    values: dict[str, Any] = dict(
        model="m2d_vit_base", input_size=[80, 608], patch_size=[16, 16], mask_ratio=np.float64(0.7),
        batch_size=512, epochs=300, warmup_epochs=20, blr=np.float64(3e-4), lr=np.float32(2.4e-3),
        weight_decay=0.05, norm_pix_loss=True, seed=np.int64(3), ema_decay_init=0.99995, ema_decay=0.99999,
        data_path="data", output_dir="m2d_vit_base-80x608p16x16-221006-mr7",
    )  # fmt: skip
    values.update(overrides)
    return argparse.Namespace(**values)


def optimizer_state(state: dict[str, Tensor], n_params: int = 3) -> dict[str, Any]:
    """A small AdamW-style ``optimizer.state_dict()`` for the first ``n_params`` float tensors."""
    names = [k for k, v in state.items() if v.is_floating_point()][:n_params]
    return {
        "state": {i: {"step": torch.tensor(1234.0), "exp_avg": torch.zeros_like(state[n]),
                      "exp_avg_sq": torch.zeros_like(state[n])} for i, n in enumerate(names)},
        "param_groups": [{"lr": np.float64(2.4e-3), "betas": (0.9, 0.95), "weight_decay": 0.05, "eps": 1e-8,
                          "amsgrad": False, "params": list(range(len(names)))}],
    }  # fmt: skip


def write_training_checkpoint(
    path: str | Path, state: dict[str, Tensor], epoch: int = 300, **args: Any
) -> Path:
    """``torch.save({"model", "optimizer", "epoch", "scaler", "args"})`` like ``checkpoint-300.pth``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": state,
            "optimizer": optimizer_state(state),
            "epoch": epoch,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 17},
            "args": training_args(**args),
        },
        path,
    )  # fmt: skip
    return path


def write_state(path: str | Path, state: dict[str, Tensor], wrapper: str | None = None) -> Path:
    """``torch.save(state)`` or ``torch.save({wrapper: state})`` (e.g. ``"model"``, ``"state_dict"``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state if wrapper is None else {wrapper: state}, path)
    return path
