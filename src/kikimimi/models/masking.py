"""Patch masking for masked-modelling methods (M2D), the training mask of M2D2 stage 2 and of fine-tuning (stage 1.1).

Index arithmetic on patch grids only (torch, nothing of kikimimi), so that both the methods (pre-training) and
:mod:`kikimimi.evaluation.finetune` (the stage-1.1 training mask) use this one home.

- :func:`random_masking`: unstructured per-sample random masking: every sample draws its own uniform noise over
  the ``L`` patch positions, the positions are ordered by that noise (argsort) and the first
  ``int(L * (1 - mask_ratio))`` become *visible*, the rest *masked*.
- :func:`structured_masking`: the structured training mask of the official stage 2 (``clap_only``,
  ``../shared/docs/fact-sheet-m2d2-2026.md`` §4 "Training mask"): whole frequency rows and time columns of the
  ``Fg × Tg`` patch grid are *marked*. ``marked="visible"`` (the official code, the default) keeps the marked
  rows/columns visible and masks as many other patches, picked by the tie order of a descending argsort;
  ``marked="masked"`` (what the method description says) masks the marked patches themselves.

- the informed strategies of NTT's IJCNN 2026 masking paper (fact sheet §5; implemented from its description):
  :func:`dispersion_masking` (DWM: patches drawn to be masked with weights = their mean absolute deviation or
  variance), :func:`object_centric_masking` (SGIM: the patches least similar to the two feature clusters are
  masked), :func:`inverse_block_masking` (IBM: 5 × 5 blocks mark the *visible* region), with the hint swap
  (:func:`hint_swap`) and its per-epoch schedule (:func:`hint_ratio`). Each keeps ``int(L · (1 − r))`` visible.

Patch index ``f · Tg + t`` (frequency-major, as :class:`kikimimi.models.vit.AudioViT` flattens its patches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "STRUCTURED_MARKED",
    "MaskIds",
    "dispersion_masking",
    "gather_tokens",
    "hint_ratio",
    "hint_swap",
    "inverse_block_masking",
    "object_centric_masking",
    "patch_dispersion",
    "num_visible",
    "random_masking",
    "structured_counts",
    "structured_masking",
    "training_mask",
]

#: what :func:`structured_masking` does with its marked rows and columns: ``"visible"`` = the official code,
#: ``"masked"`` = the described behaviour
STRUCTURED_MARKED = ("visible", "masked")


@dataclass(frozen=True)
class MaskIds:
    """Index sets of one masking draw (all ``int64``).

    Attributes:
        visible: ``[B, Lv]`` patch indices fed to the online encoder (in shuffle order).
        masked: ``[B, Lm]`` patch indices to predict (in shuffle order), ``Lv + Lm = L``.
        restore: ``[B, L]`` inverse permutation: ``cat([visible, masked], 1).gather(1, restore)``
            equals ``arange(L)`` for each row, i.e. it puts shuffled tokens back on the grid.
    """

    visible: torch.Tensor
    masked: torch.Tensor
    restore: torch.Tensor


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Number of visible patches ``int(L * (1 - mask_ratio))`` (57 for L=190, r=0.7)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return int(num_patches * (1 - mask_ratio))


def random_masking(
    batch_size: int,
    num_patches: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskIds:
    """Draw an unstructured random mask per sample.

    Args:
        batch_size: ``B``.
        num_patches: ``L`` patches per sample.
        mask_ratio: fraction of masked patches ``r`` in [0, 1).
        generator: CPU ``torch.Generator``; ``None`` uses the global torch RNG.
        device: device of the returned index tensors.

    Returns:
        :class:`MaskIds` with ``visible [B, int(L(1-r))]``, ``masked [B, L - Lv]``, ``restore [B, L]``.
    """
    keep = num_visible(num_patches, mask_ratio)
    if keep < 1:
        raise ValueError(f"mask_ratio={mask_ratio} leaves no visible patch out of {num_patches}; lower the ratio")
    noise = torch.rand(batch_size, num_patches, generator=generator)
    shuffle = torch.argsort(noise, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    return MaskIds(
        visible=shuffle[:, :keep].to(device),
        masked=shuffle[:, keep:].to(device),
        restore=restore.to(device),
    )


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Select tokens per sample: ``tokens [B, L, D]``, ``ids [B, N]`` → ``[B, N, D]``."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def _from_order(order: torch.Tensor, keep: int, device: torch.device | str | None) -> MaskIds:
    """:class:`MaskIds` of a per-sample patch order ``[B, L]`` whose first ``keep`` entries are visible."""
    restore = torch.argsort(order, dim=1)
    return MaskIds(visible=order[:, :keep].to(device), masked=order[:, keep:].to(device), restore=restore.to(device))


def structured_counts(grid: tuple[int, int], mask_ratio: float, u: float) -> tuple[int, int]:
    """``(NF, NT)``: marked frequency rows and time columns of the official structured mask for one uniform draw
    ``u`` ∈ [0, 1): ``NF = min(int(Fg·(r + 1/Fg)·u), Fg − 1)``, ``NT = int(Tg · max(r + 0.5/Tg − NF/Fg, 0))``.

    At ``r = 0.3`` on the 5 × 62 grid of a 1001-frame chunk: NF ∈ {0, 1, 2} → NT = 19 / 6 / 0.
    """
    fg, tg = int(grid[0]), int(grid[1])
    r = float(mask_ratio)
    nf = min(int(fg * (r + 1.0 / fg) * float(u)), fg - 1)
    nt = int(tg * max(r + 0.5 / tg - nf / fg, 0.0))
    return nf, min(nt, tg)


def structured_masking(
    batch_size: int,
    grid: tuple[int, int],
    mask_ratio: float,
    *,
    marked: Literal["visible", "masked"] = "visible",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskIds:
    """The structured training mask of M2D2 stage 2 on an ``Fg × Tg`` patch grid.

    One uniform draw per batch gives ``(NF, NT)`` (:func:`structured_counts`); every sample marks its own ``NF``
    random rows and ``NT`` random columns (``M`` marked patches, the same count for every sample).

    - ``marked="visible"`` (the official code): the patch ids are sorted by the mark, descending, and the first
      ``L − M`` are visible: the marked patches stay visible and ``M`` unmarked ones are masked, chosen by the
      tie order of ``torch.argsort(descending=True)`` (not random; on CPU it favours low frequency rows).
    - ``marked="masked"`` (the described behaviour): the ``M`` marked patches are masked, the rest visible.

    Returns:
        :class:`MaskIds` with ``visible [B, L − M]`` and ``masked [B, M]`` (``L = Fg·Tg``).
    """
    if marked not in STRUCTURED_MARKED:
        raise ValueError(f"marked must be one of {STRUCTURED_MARKED}, got {marked!r}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    fg, tg = int(grid[0]), int(grid[1])
    u = float(torch.rand((), generator=generator))
    nf, nt = structured_counts((fg, tg), mask_ratio, u)
    flags = torch.zeros(batch_size, fg, tg)
    for i in range(batch_size):
        rows = torch.randperm(fg, generator=generator)[:nf]
        cols = torch.randperm(tg, generator=generator)[:nt]
        flags[i, rows, :] = 1.0
        flags[i, :, cols] = 1.0
    flags = flags.reshape(batch_size, fg * tg)
    n_marked = int(flags[0].sum())
    if marked == "visible":
        order = torch.argsort(flags, dim=1, descending=True)
    else:
        order = torch.argsort(flags, dim=1, stable=True)  # unmarked (0) first, in grid order
    return _from_order(order, max(1, fg * tg - n_marked), device)  # a one-column chunk may mark everything


def training_mask(
    batch_size: int,
    grid: tuple[int, int],
    mask_ratio: float,
    *,
    structured: bool = True,
    marked: Literal["visible", "masked"] = "visible",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskIds | None:
    """The M2D2 stage-2 training mask of one chunk grid: ``None`` at ratio 0 (stage 2.1), else
    :func:`structured_masking` (the official default) or :func:`random_masking` (``structured=False``, the
    official ``--random_mask``)."""
    if mask_ratio <= 0.0:
        return None
    if structured:
        return structured_masking(batch_size, grid, mask_ratio, marked=marked, generator=generator, device=device)
    return random_masking(batch_size, grid[0] * grid[1], mask_ratio, generator=generator, device=device)


# ---------------------------------------------------------------------------------------------- informed masking
def hint_ratio(
    epoch: int, epochs: float, *, start_epoch: int = 50, k: float = 2.0, absolute: float | None = None
) -> float:
    """The hint ratio ``h`` set before epoch ``epoch`` (0-based) of ``epochs``: ``absolute`` when given (≥ 0),
    else 1 before ``start_epoch`` and ``1 − (epoch / epochs)^k`` from it on (official defaults 50 and 2)."""
    if absolute is not None and absolute >= 0:
        return float(absolute)
    if epoch < start_epoch:
        return 1.0
    return 1.0 - (float(epoch) / float(epochs)) ** float(k)


def _order_from_masked(masked: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A visible-first patch order ``[B, L]`` from a boolean masked map ``[B, L]`` (each part in random order)."""
    noise = torch.rand(masked.shape, generator=generator)
    return torch.argsort(noise + masked.float() * 2.0, dim=1)


def hint_swap(masked: torch.Tensor, h: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reveal ``int(M · h)`` of each sample's ``M`` informed-masked patches and mask as many drawn uniformly from the
    visible ∪ revealed ones, so the visible count is unchanged. ``masked``: boolean ``[B, L]``; returns a new map."""
    out = masked.clone()
    for i in range(out.shape[0]):
        m_idx = torch.nonzero(out[i]).flatten()
        n = int(m_idx.numel() * float(h))
        if n <= 0:
            continue
        revealed = m_idx[torch.randperm(m_idx.numel(), generator=generator)[:n]]
        out[i, revealed] = False
        pool = torch.nonzero(~out[i]).flatten()
        out[i, pool[torch.randperm(pool.numel(), generator=generator)[:n]]] = True
    return out


def _finish(masked: torch.Tensor, keep: int, device, generator: torch.Generator | None) -> MaskIds:
    return _from_order(_order_from_masked(masked, generator), keep, device)


def patch_dispersion(
    lms: torch.Tensor, patch_size: tuple[int, int], kind: Literal["mad", "var"] = "mad"
) -> torch.Tensor:
    """Dispersion of each patch of a normalised log-mel ``[B, F, T]`` → ``[B, Fg·Tg]`` (frequency-major): the mean
    absolute deviation from the patch mean (``"mad"``) or the variance (``"var"``)."""
    pf, pt = patch_size
    b, f, t = lms.shape
    x = lms[:, : f // pf * pf, : t // pt * pt].reshape(b, f // pf, pf, t // pt, pt).permute(0, 1, 3, 2, 4)
    x = x.reshape(b, (f // pf) * (t // pt), pf * pt).float()
    dev = x - x.mean(dim=-1, keepdim=True)
    return dev.abs().mean(dim=-1) if kind == "mad" else dev.pow(2).mean(dim=-1)


def dispersion_masking(
    lms: torch.Tensor,
    patch_size: tuple[int, int],
    mask_ratio: float,
    *,
    kind: Literal["mad", "var"] = "mad",
    deterministic: bool = False,
    h: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskIds:
    """DWM: ``L − int(L(1 − r))`` patches drawn without replacement to be masked, with the patches' dispersion
    (:func:`patch_dispersion`) + 1e-12 as weights (``deterministic``: the most dispersed ones), then the hint swap
    with ``h`` (``h ≥ 1``: plain :func:`random_masking`)."""
    b = lms.shape[0]
    weights = patch_dispersion(lms.detach().cpu(), patch_size, kind) + 1e-12
    n = weights.shape[1]
    keep = num_visible(n, mask_ratio)
    if h >= 1.0:
        return random_masking(b, n, mask_ratio, generator=generator, device=device)
    n_mask = n - keep
    if deterministic:
        chosen = torch.topk(weights, n_mask, dim=1).indices
    else:
        chosen = torch.multinomial(weights, n_mask, replacement=False, generator=generator)
    masked = torch.zeros(b, n, dtype=torch.bool).scatter_(1, chosen, True)
    return _finish(hint_swap(masked, h, generator=generator), keep, device, generator)


def object_centric_masking(
    features: torch.Tensor,
    mask_ratio: float,
    *,
    h: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskIds:
    """SGIM: ``features [B, L, D]`` = the online encoder's patch features of the unmasked input (no grad). Per
    sample the L2-normalised features are split in two by their projection on the first principal direction
    (threshold: the mean projection); a patch's score is its highest cosine to the two cluster means; the
    ``L − int(L(1 − r))`` lowest-scoring patches are masked; then the hint swap with ``h``."""
    b, n, _ = features.shape
    keep = num_visible(n, mask_ratio)
    if h >= 1.0:
        return random_masking(b, n, mask_ratio, generator=generator, device=device)
    x = torch.nn.functional.normalize(features.detach().float().cpu(), dim=-1)
    centred = x - x.mean(dim=1, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    proj = torch.einsum("bld,bd->bl", centred, v[:, 0])
    side = proj > proj.mean(dim=1, keepdim=True)
    scores = torch.empty(b, n)
    for i in range(b):
        means = [x[i][part].mean(0) if part.any() else x[i].mean(0) for part in (side[i], ~side[i])]
        centres = torch.nn.functional.normalize(torch.stack(means), dim=-1)
        scores[i] = (x[i] @ centres.t()).max(dim=1).values
    chosen = torch.argsort(scores, dim=1)[:, : n - keep]
    masked = torch.zeros(b, n, dtype=torch.bool).scatter_(1, chosen, True)
    return _finish(hint_swap(masked, h, generator=generator), keep, device, generator)


def inverse_block_masking(
    batch_size: int,
    grid: tuple[int, int],
    mask_ratio: float,
    *,
    block: int = 5,
    adjust: float = 0.07,
    h: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskIds:
    """IBM (inverse block masking, as in EAT / data2vec 2.0): ``int(L · ((1 − r) + adjust) / block²)`` random
    centres each open a ``block × block`` visible region (clamped to the grid); the visible count is then forced to
    exactly ``int(L(1 − r))`` (random patches added or removed) and both parts shuffled. ``h ≥ 1``: plain
    :func:`random_masking` (the hint ratio is only this gate)."""
    fg, tg = int(grid[0]), int(grid[1])
    n = fg * tg
    keep = num_visible(n, mask_ratio)
    if h >= 1.0:
        return random_masking(batch_size, n, mask_ratio, generator=generator, device=device)
    n_centres = max(1, int(n * ((1.0 - mask_ratio) + adjust) / (block * block)))
    visible = torch.zeros(batch_size, fg, tg, dtype=torch.bool)
    half = block // 2
    for i in range(batch_size):
        centres = torch.randint(0, n, (n_centres,), generator=generator)
        for c in centres.tolist():
            f, t = divmod(c, tg)
            visible[i, max(0, f - half) : f - half + block, max(0, t - half) : t - half + block] = True
    visible = visible.reshape(batch_size, n)
    for i in range(batch_size):
        extra = int(visible[i].sum()) - keep
        pool = torch.nonzero(visible[i] if extra > 0 else ~visible[i]).flatten()
        pick = pool[torch.randperm(pool.numel(), generator=generator)[: abs(extra)]]
        visible[i, pick] = extra < 0
    return _finish(~visible, keep, device, generator)
