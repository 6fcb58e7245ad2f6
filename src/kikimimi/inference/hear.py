"""HEAR API (hearbenchmark.com) for kikimimi encoders.

    from kikimimi import hear
    model = hear.load_model("m2d_vit_base-80x608p16x16-221006-mr7/checkpoint-300.pth")
    scene = hear.get_scene_embeddings(audio, model)              # [n_sounds, scene_embedding_size]
    emb, ts = hear.get_timestamp_embeddings(audio, model)        # [n, T, D], [n, T] in ms

``audio`` is a float tensor ``[n_sounds, n_samples]`` in [-1, 1] at ``model.sample_rate``. Timestamp
embeddings are the encoder's frame features (M2D: Fg·D per time step, index f·D + d; BYOL-A: d per
80/40 ms frame) with the same timestamps as :meth:`kikimimi.inference.encoder.AudioEncoder.embed_frames`; scene
embeddings are the clip embeddings of :meth:`~kikimimi.inference.encoder.AudioEncoder.embed`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from kikimimi.inference.encoder import AudioEncoder, load


class HearModel(nn.Module):
    """``nn.Module`` wrapper with the attributes the HEAR API requires."""

    def __init__(self, encoder: AudioEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.backbone = encoder.encoder  # registered so .to()/.parameters() see the weights
        self.sample_rate = encoder.sample_rate
        self.scene_embedding_size = encoder.embedding_dim
        self.timestamp_embedding_size = encoder.frame_embedding_dim


def load_model(model_file_path: str = "", **kwargs: Any) -> HearModel:
    """Load a checkpoint (official layout or kikimimi folder) or a registered model name (``"m2d-vit-base-mr7"``,
    downloaded on first use; pass ``accept_licence=True`` for official files); ``kwargs`` go to
    :func:`kikimimi.load`."""
    if not model_file_path:
        raise ValueError("kikimimi.inference.hear.load_model needs a checkpoint path or a model name "
                         "(`kikimimi models list`)")
    return HearModel(load(model_file_path, **kwargs))


def _as_list(audio: torch.Tensor) -> list[np.ndarray]:
    if audio.dim() != 2:
        raise ValueError(f"HEAR audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}")
    return list(audio.detach().float().cpu().numpy())


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """``[n_sounds, n_samples]`` → ``[n_sounds, scene_embedding_size]`` float32."""
    return torch.from_numpy(model.encoder.embed(_as_list(audio), model.sample_rate))


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n_sounds, n_samples]`` → (embeddings ``[n, T, D]`` float32, timestamps ``[n, T]`` in ms)."""
    emb, ts = model.encoder.embed_frames(_as_list(audio), model.sample_rate)
    return torch.from_numpy(np.asarray(emb, dtype=np.float32)), torch.from_numpy(np.asarray(ts, dtype=np.float32))
