"""The M2D audio Vision Transformer (encoder only).

Input is a normalised log-mel spectrogram ``[B, 1, F, T]`` (row 0 = lowest mel band). Patches are
cut by a Conv2d with kernel = stride = patch size and flattened **frequency-major**: token index
``f * Tg + t``. Parameter names follow the official files (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), so an
official state dict loads without renaming.

Long and short inputs follow the official runtime (docs/reference.md §4.1): the spectrogram is cut
into chunks of the training length, each chunk is encoded on its own (a short last chunk uses the
first ``Tc`` positional-embedding columns of every frequency row) and the frame features are
concatenated along time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: name -> (embed_dim, depth, num_heads)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 6, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


@dataclass
class ViTConfig:
    """Shape of an audio ViT.

    ``input_size`` = (mel bins, training frames), ``patch_size`` = (mel bins, frames) per patch.
    """

    input_size: tuple[int, int] = (80, 608)
    patch_size: tuple[int, int] = (16, 16)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    sample_rate: int = 16000
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.patch_size = (int(self.patch_size[0]), int(self.patch_size[1]))
        if self.input_size[0] % self.patch_size[0]:
            raise ValueError(f"mel bins {self.input_size[0]} not divisible by patch height {self.patch_size[0]}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """(Fg, Tg): patches along frequency and along time for a full training-length chunk."""
        return self.input_size[0] // self.patch_size[0], self.input_size[1] // self.patch_size[1]

    @property
    def num_patches(self) -> int:
        fg, tg = self.grid_size
        return fg * tg

    @property
    def frame_dim(self) -> int:
        """Size of one frame feature: Fg · embed_dim (3840 for ViT-Base with 16x16 patches)."""
        return self.grid_size[0] * self.embed_dim

    @classmethod
    def from_size(cls, name: str, **kwargs: Any) -> ViTConfig:
        if name not in VIT_SIZES:
            raise ValueError(f"unknown ViT size {name!r}; choose from {', '.join(VIT_SIZES)}")
        dim, depth, heads = VIT_SIZES[name]
        return cls(embed_dim=dim, depth=depth, num_heads=heads, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[N] positions -> [N, dim]: sin of pos·ω_k in the first half, cos in the second (float64)."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / (10000.0**omega)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_f: int, grid_t: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos positional embedding ``[1, (1 +) grid_f·grid_t, dim]`` (float32).

    Rows are frequency-major (index f·grid_t + t). Dims ``0 … dim/2−1`` encode the time (column)
    index and dims ``dim/2 …`` the frequency (row) index; the CLS row is all zeros.
    """
    if dim % 4:
        raise ValueError(f"sin-cos embedding needs dim divisible by 4, got {dim}")
    f_idx, t_idx = torch.meshgrid(torch.arange(grid_f), torch.arange(grid_t), indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, t_idx.reshape(-1)), _sincos_1d(dim // 2, f_idx.reshape(-1))], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Resample a ``[1, 1 + Fg·Tg, D]`` positional embedding to a new (Fg', Tg') grid.

    Used for whole-clip fine-tuning (``dur_frames``): bicubic, align_corners=False, no antialias when
    the grid grows; the first columns are kept when only time shrinks (truncation, as the official code).
    """
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    if new_grid[0] == old_grid[0] and new_grid[1] <= old_grid[1]:
        grid = grid[:, :, :, : new_grid[1]]
    else:
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([cls, grid], dim=1)


def official_chunk_spans(n_frames: int, chunk_frames: int, patch_frames: int) -> tuple[int, list[tuple[int, int]]]:
    """The official M2D chunking rule for a log-mel of ``n_frames`` frames.

    The log-mel is right-padded with ``pad = (p − (T mod unit mod p)) mod p`` zero frames (p = patch width,
    unit = training length ``chunk_frames``), cut every ``unit`` frames, and each piece is trimmed to whole
    patches (a piece without one is dropped).

    Returns:
        ``(pad, spans)``: the padding in frames and one ``(start, width)`` per chunk, in frames of the padded
        log-mel; ``width`` is a multiple of p and at most ``unit``.
    """
    pad = (patch_frames - (n_frames % chunk_frames % patch_frames)) % patch_frames
    padded = n_frames + pad
    spans = []
    for start in range(0, padded, chunk_frames):
        width = min(chunk_frames, padded - start) // patch_frames * patch_frames
        if width:
            spans.append((start, width))
    return pad, spans


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection ordered [q; k; v]."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, N, D]."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Linear → exact GELU → Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Conv2d patchifier: ``[B, 1, F, T]`` -> ``[B, Fg·Tg, D]`` (frequency-major)."""

    def __init__(self, patch_size: tuple[int, int], embed_dim: int, in_chans: int = 1) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def init_vit_weights(module: nn.Module) -> None:
    """MAE-style init: xavier-uniform Linear (bias 0), LayerNorm 1/0."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class AudioViT(nn.Module):
    """M2D audio ViT encoder (online network only); a :class:`~kikimimi.models.encoder.FrameEncoder`.

    State-dict keys equal the official encoder's: 150 tensors for ViT-Base.
    """

    def __init__(self, config: ViTConfig | None = None) -> None:
        super().__init__()
        self.config = config or ViTConfig()
        c = self.config
        fg, tg = c.grid_size
        self.patch_embed = PatchEmbed(c.patch_size, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(c.embed_dim, fg, tg), requires_grad=False)
        self.blocks = nn.ModuleList([Block(c.embed_dim, c.num_heads, c.mlp_ratio) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh MAE-style initialisation (the sin-cos positional embedding is fixed)."""
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        for name, module in self.named_modules():
            if name.startswith("blocks") or name == "norm":
                init_vit_weights(module)

    # ------------------------------------------------------------------ shapes
    @property
    def grid_size(self) -> tuple[int, int]:
        return self.config.grid_size

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def frame_dim(self) -> int:
        return self.config.frame_dim

    # ------------------------------------------------------------------ forward
    def patch_pos_embed(self, n_time_patches: int) -> torch.Tensor:
        """Positional embeddings of the patch tokens for a chunk of ``Tc`` time patches: ``[1, Fg·Tc, D]``.

        Uses the first ``Tc`` columns of every frequency row of the stored table (never regenerated).
        """
        fg, tg = self.grid_size
        if n_time_patches > tg:
            raise ValueError(f"chunk of {n_time_patches} time patches exceeds the model's {tg}")
        grid = self.pos_embed[:, 1:].reshape(1, fg, tg, -1)[:, :, :n_time_patches]
        return grid.reshape(1, fg * n_time_patches, -1)

    def patchify_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, F, T]`` -> patch tokens with positional embedding ``[B, Fg·Tc, D]`` (no CLS)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        tokens = self.patch_embed(x)
        n_time = x.shape[-1] // self.config.patch_size[1]
        return tokens + self.patch_pos_embed(n_time)

    def run_blocks(self, tokens: torch.Tensor, return_layers: bool = False):
        """Prepend CLS, run the blocks and the final norm, drop CLS.

        ``tokens`` ``[B, N, D]`` already carry positional embeddings. Returns ``[B, N, D]``, or with
        ``return_layers`` a list of every block's output (un-normed, the last one normed).
        """
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1)
        layers = []
        for block in self.blocks:
            x = block(x)
            if return_layers:
                layers.append(x[:, 1:])
        x = self.norm(x)[:, 1:]
        if return_layers:
            layers[-1] = x
            return layers
        return x

    def forward_tokens(self, x: torch.Tensor, return_layers: bool = False):
        """One chunk ``[B, 1, F, T]`` (T ≤ training length, whole patches) -> ``[B, Fg·Tc, D]``."""
        return self.run_blocks(self.patchify_tokens(x), return_layers=return_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`encode_lms` with default options: ``[B, F, T]`` -> ``[B, T', Fg·D]``."""
        return self.encode_lms(x)

    def _to_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, Fg·Tc, D]`` -> ``[B, Tc, Fg·D]`` with feature index f·D + d."""
        b, n, d = tokens.shape
        fg = self.grid_size[0]
        return tokens.reshape(b, fg, n // fg, d).permute(0, 2, 1, 3).reshape(b, n // fg, fg * d)

    # ------------------------------------------------------------------ the FrameEncoder interface
    @property
    def embedding_dim(self) -> int:
        """Size of a frame feature and of a clip embedding: Fg·D (:attr:`frame_dim`)."""
        return self.frame_dim

    @property
    def chunk_frames(self) -> int:
        """Log-mel frames of one chunk: the training length ``input_size[1]``."""
        return self.config.input_size[1]

    def split_chunks(self, lms: torch.Tensor) -> list[torch.Tensor]:
        """Cut a normalised log-mel ``[..., F, T]`` into the official chunks ``[..., F, Tc]`` (see
        :func:`official_chunk_spans`): right-padded with zeros to whole patches, then training-length pieces,
        each trimmed to whole patches. The chunks are views of the (padded) input."""
        pad, spans = official_chunk_spans(lms.shape[-1], self.chunk_frames, self.config.patch_size[1])
        if pad:
            lms = F.pad(lms, (0, pad))
        return [lms[..., start:start + width] for start, width in spans]

    def encode_chunks(self, chunks: torch.Tensor, *, flat: bool = False, return_layers: bool = False):
        """Encode a batch of equal-width chunks ``[B, F, Tc]`` (Tc ≤ :attr:`chunk_frames`, whole patches).

        Returns frame features ``[B, Tc / p, Fg·D]``; with ``flat`` the patch tokens ``[B, Fg·Tc / p, D]``
        (frequency-major); with ``return_layers`` a list with one such tensor per block (last one normed).
        """
        out = self.forward_tokens(chunks[:, None], return_layers=return_layers)
        if flat:
            return out
        return [self._to_frames(x) for x in out] if return_layers else self._to_frames(out)

    def encode_lms(self, lms: torch.Tensor, *, flat: bool = False, return_layers: bool = False):
        """Encode a normalised log-mel of any length with the official chunking rule.

        The chunks of :meth:`split_chunks` go through :meth:`encode_chunks` one after the other and their
        outputs are concatenated along time.

        Args:
            lms: ``[B, F, T]`` (or ``[B, 1, F, T]``) normalised log-mel.
            flat: return all patch tokens ``[B, Fg·T', D]`` (chunks concatenated, each freq-major)
                instead of frame features ``[B, T', Fg·D]``.
            return_layers: return a list with one such tensor per block (last one normed).
        """
        if lms.dim() == 4:
            lms = lms[:, 0]
        outputs = [self.encode_chunks(chunk, flat=flat, return_layers=return_layers)
                   for chunk in self.split_chunks(lms)]
        if return_layers:
            return [torch.cat(layer, dim=1) for layer in zip(*outputs, strict=True)]
        return torch.cat(outputs, dim=1)

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Clip embedding: mean of the frame features over time, ``[..., T', D]`` -> ``[..., D]``."""
        return frames.mean(dim=-2)

    def timestamps_ms(self, n_frames: int, n_samples: int, sample_rate: int, hop_length: int) -> torch.Tensor:
        """Official frame timestamps ``[n_frames]`` (float64): t_i = i · duration_s / n_frames · 1000 ms with
        duration_s = n_samples / sample_rate (``hop_length`` plays no part)."""
        duration_s = n_samples / sample_rate
        return torch.arange(n_frames, dtype=torch.float64) * (duration_s / max(n_frames, 1)) * 1000.0

    def fresh_like(self) -> AudioViT:
        """A new ViT of the same configuration, freshly initialised (global torch generator), on the CPU.

        The positional table is copied, not regenerated: it is fixed, and may have been resized
        (:func:`resize_pos_embed`).
        """
        fresh = AudioViT(self.config)
        fresh.pos_embed.data.copy_(self.pos_embed.data)
        return fresh

    def num_output_frames(self, n_lms_frames: int) -> int:
        """Number of frame features ``T'`` that :meth:`encode_lms` returns for ``n_lms_frames`` input frames."""
        _, spans = official_chunk_spans(n_lms_frames, self.chunk_frames, self.config.patch_size[1])
        return sum(width // self.config.patch_size[1] for _, width in spans)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
