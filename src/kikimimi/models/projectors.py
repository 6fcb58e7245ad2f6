"""Audio and text projectors of M2D-CLAP (2024) and M2D2 / M2D-CLAP (2025).

Key names match the official files once the ``audio_proj.`` / ``text_proj.`` prefix is stripped.
"""

from __future__ import annotations

import torch
from torch import nn

from kikimimi.models.vit import Block, init_vit_weights


class MLPAudioProjector(nn.Sequential):
    """2024 ``audio_proj``: Linear(D→D) → ReLU → Linear(D→out). Input ``[B, D]`` (mean of all patch tokens)."""

    def __init__(self, dim: int = 768, out_dim: int | None = None) -> None:
        super().__init__(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim or dim))


class SemanticProjector(nn.Module):
    """2025 ``audio_proj`` ("AudioToSemantic"): a learnable semantic token is prepended (no positional
    embedding) to the token sequence ``[B, N, D]``, ``depth`` blocks run (1 head, LayerNorm eps 1e-5),
    and the normed token 0 is the output ``[B, D]``.

    A fresh projector is initialised as the official one (fact-sheet-m2d2-2026.md §4): ``sem_token`` zeros,
    Linear xavier-uniform with bias 0, LayerNorm 1/0.
    """

    def __init__(self, dim: int = 768, depth: int = 1, mlp_ratio: float = 1.0, num_heads: int = 1) -> None:
        super().__init__()
        self.sem_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.sem_blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, norm_eps=1e-5) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.apply(init_vit_weights)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.sem_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for block in self.sem_blocks:
            x = block(x)
        return self.norm(x[:, 0])


#: Semantic projector modes of the 2025 release: mode -> (depth, mlp_ratio).
SEMANTIC_MODES: dict[int, tuple[int, float]] = {1: (1, 1.0), 2: (2, 1.0), 3: (3, 2.0), 4: (4, 2.0)}


def linear_text_projection(in_dim: int, out_dim: int = 768) -> nn.Linear:
    """``text_proj`` when the text embedding size differs from the audio space (keys ``weight``/``bias``)."""
    return nn.Linear(in_dim, out_dim)


def mlp_text_projection(in_dim: int, out_dim: int = 768, hidden: int | None = None) -> nn.Sequential:
    """MLP ``text_proj`` variant (keys ``0.*`` and ``2.*``)."""
    hidden = hidden or out_dim
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
