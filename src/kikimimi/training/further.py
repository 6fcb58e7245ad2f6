"""Further pre-training from an encoder-only release: the full M2D state that ``init_from`` needs.

A released encoder (a kikimimi folder such as the packaged ``open-m2d-tiny``, an official ``*_enconly`` file, or a
registered name) holds the online encoder only, while an M2D run starts from a full state: online encoder, target
and predictor (:meth:`kikimimi.methods.m2d.M2D.load_official_state_dict`). As in M2D's further pre-training
(M2D-X), both the online encoder and the target start from the released weights; the predictor, which the release
does not carry, starts from a fresh (seeded) initialisation. :func:`encoder_init_file` writes that state in the
official layout; ``kikimimi pretrain --init-from FILE`` continues it, and ``--init-from FOLDER`` (a kikimimi
folder or packaged name such as ``open-m2d-tiny``) builds this state itself; the first run's further
pre-training stage (:mod:`kikimimi.apps.first_run.further_stage`) uses it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kikimimi.checkpoints import load_encoder
from kikimimi.checkpoints.names import vit_size_name
from kikimimi.methods import build_method
from kikimimi.training.checkpointing import save_checkpoint_file

__all__ = ["encoder_init_file", "encoder_init_state"]


def encoder_init_state(encoder: str | Path, *, mask_ratio: float = 0.7, seed: int = 0) -> dict[str, torch.Tensor]:
    """The full official-layout M2D state dict that continues the M2D encoder ``encoder``.

    Args:
        encoder: a kikimimi folder, an official encoder file or a registered name (:func:`kikimimi.checkpoints.
            load_encoder`; a packaged model is verified against its SHA-256 and needs no network).
        mask_ratio: the M2D mask ratio (not stored in the state; it only has to be valid).
        seed: seed of the predictor's fresh initialisation (the global torch RNG is left as it was).

    Returns:
        ``{official key: tensor}``: the encoder's tensors under their own names (``blocks.*``, ``pos_embed`` …),
        ``target_blocks.*`` / ``target_norm.*`` equal to ``blocks.*`` / ``norm.*``, a fresh predictor
        (``decoder_*``, ``mask_token``) and the encoder's ``norm_stats`` [2].

    Raises:
        ValueError: ``encoder`` is not an M2D encoder (e.g. a BYOL-A file), naming it.
    """
    with torch.random.fork_rng(devices=[]):  # building the networks draws random weights: leave the global RNG
        bundle = load_encoder(encoder)
        if bundle.family != "m2d":
            raise ValueError(f"'{encoder}': further pre-training with M2D needs an M2D encoder, got {bundle.family}")
        vit = bundle.encoder.config
        torch.manual_seed(int(seed))
        method = build_method(
            "m2d",
            size=vit_size_name(vit),
            vit_config=vit,
            mask_ratio=float(mask_ratio),
            norm_stats=bundle.norm_stats.to_list(),
        )
    method.encoder.load_state_dict(bundle.encoder.state_dict())
    state = method.export_official_state_dict()
    for key in list(state):
        if key.startswith(("target_blocks.", "target_norm.")):
            state[key] = state[key.removeprefix("target_")].clone()  # the target starts as the released encoder
    return state


def encoder_init_file(encoder: str | Path, dest: str | Path, *, mask_ratio: float = 0.7, seed: int = 0) -> Path:
    """Write :func:`encoder_init_state` of ``encoder`` to ``dest`` (atomic ``torch.save``); returns ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint_file(encoder_init_state(encoder, mask_ratio=mask_ratio, seed=seed), dest)
    return dest
