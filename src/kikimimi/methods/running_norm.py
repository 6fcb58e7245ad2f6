"""BYOL-A v1 running pre-normalisation (docs/reference.md §7.2).

v1 normalises every log-mel item with statistics that are estimated *while training*:

- ``mean`` = running mean of the per-item means (mean over frequency and time of each item);
- ``var``  = running mean of the per-item mean squared deviation from the **current** running mean
  (i.e. the mean after this item's update);
- after ``max_update_epochs · epoch_samples`` updates the statistics freeze;
- output ``(x − mean) / std`` with ``std = max(sqrt(var), float32 eps)``.

The running mean is the plain cumulative average (the corrected form; see docs/reference.md §7.2 on the
pre-2022 off-by-one).

Deviations from the official recipe (documented on purpose):

- the official module runs inside each DataLoader worker, so every worker holds its own statistics and
  the result depends on the worker count and scheduling. kikimimi runs it inside the method on each
  batch, item by item in batch order — one deterministic set of statistics per training process
  (under DDP each rank keeps its own, like the mixup memory bank);
- statistics only update when ``update`` is true (the BYOL-A method passes ``self.training``), so
  evaluation forwards do not move them;
- the statistics are kept as *extra state* (``get_extra_state``), not buffers, so DDP never broadcasts
  them and ``state_dict()`` / ``--resume`` restore them exactly.

Statistics are accumulated in float64 on the input's device (float32 on MPS, which lacks float64).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kikimimi.features.frontend import FLOAT32_EPS

__all__ = ["RunningNorm"]


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class RunningNorm(nn.Module):
    """Running scalar mean/std normalisation of log-mel items, updated item by item.

    Args:
        epoch_samples: items per "epoch" of the update budget (the official recipe passes
            ``2 × number of training files``); ``None`` = never stop updating.
        max_update_epochs: the statistics freeze after ``max_update_epochs · epoch_samples`` updates (10).
        eps: lower clamp of the std (float32 machine epsilon).

    State: ``count`` (updates done, int), ``mean`` and ``var`` (0-d float64 tensors). Before the first
    update ``mean = 0``, ``var = 1`` (identity).
    """

    def __init__(self, epoch_samples: int | None, max_update_epochs: int = 10, *, eps: float = FLOAT32_EPS) -> None:
        super().__init__()
        if epoch_samples is not None and int(epoch_samples) < 1:
            raise ValueError(f"RunningNorm epoch_samples must be >= 1 (or None), got {epoch_samples!r}")
        if int(max_update_epochs) < 1:
            raise ValueError(f"RunningNorm max_update_epochs must be >= 1, got {max_update_epochs!r}")
        if not eps > 0:
            raise ValueError(f"RunningNorm eps must be positive, got {eps!r}")
        self.epoch_samples = None if epoch_samples is None else int(epoch_samples)
        self.max_update_epochs = int(max_update_epochs)
        self.eps = float(eps)
        self.count = 0
        self._mean = torch.zeros((), dtype=torch.float64)
        self._var = torch.ones((), dtype=torch.float64)

    # -- read-only views
    @property
    def max_updates(self) -> int | None:
        """Update budget ``max_update_epochs · epoch_samples`` (``None`` = unlimited)."""
        return None if self.epoch_samples is None else self.epoch_samples * self.max_update_epochs

    @property
    def frozen(self) -> bool:
        """True once the update budget is used up."""
        return self.max_updates is not None and self.count >= self.max_updates

    @property
    def mean(self) -> float:
        """Current running mean (log-mel units)."""
        return float(self._mean)

    @property
    def std(self) -> float:
        """Current std ``max(sqrt(var), eps)`` (log-mel units)."""
        return max(math.sqrt(max(float(self._var), 0.0)), self.eps)

    def _n_updates(self, batch: int) -> int:
        if self.max_updates is None:
            return batch
        return max(0, min(batch, self.max_updates - self.count))

    @torch.no_grad()
    def forward(self, x: torch.Tensor, *, update: bool | None = None) -> torch.Tensor:
        """Normalise ``x`` ``[B, F, T]`` (or one item ``[F, T]``) → same shape and dtype.

        Items are processed in batch order: item ``k`` first updates the statistics (while the budget
        lasts) and is then normalised with the statistics right after its own update.

        Args:
            x: raw (un-normalised) log-mel.
            update: update the statistics; ``None`` = ``self.training``.
        """
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(0)
        if x.dim() != 3:
            raise ValueError(f"RunningNorm expects log-mel [B, F, T] or [F, T], got {tuple(x.shape)}")
        if update is None:
            update = self.training
        b = x.shape[0]
        dt = _work_dtype(x.device)
        xd = x.detach().to(dt)
        mean0 = self._mean.to(device=x.device, dtype=dt)
        var0 = self._var.to(device=x.device, dtype=dt)
        k = self._n_updates(b) if update else 0
        if k > 0:
            head = xd[:k]
            n = self.count + torch.arange(1, k + 1, device=x.device, dtype=dt)  # counts after each update
            means = (mean0 * self.count + torch.cumsum(head.mean(dim=(1, 2)), 0)) / n
            sq_dev = (head - means[:, None, None]).square().mean(dim=(1, 2))
            variances = (var0 * self.count + torch.cumsum(sq_dev, 0)) / n
            item_mean = torch.cat([means, means[-1:].expand(b - k)])
            item_var = torch.cat([variances, variances[-1:].expand(b - k)])
            self._mean = means[-1].clone()
            self._var = variances[-1].clone()
            self.count += k
        else:
            item_mean = mean0.expand(b)
            item_var = var0.expand(b)
        item_std = item_var.clamp(min=0.0).sqrt().clamp(min=self.eps)
        out = ((xd - item_mean[:, None, None]) / item_std[:, None, None]).to(x.dtype)
        return out[0] if squeeze else out

    def extra_repr(self) -> str:
        return (
            f"epoch_samples={self.epoch_samples}, max_update_epochs={self.max_update_epochs}, "
            f"count={self.count}, mean={self.mean:.4f}, std={self.std:.4f}"
        )

    # -- state_dict support (extra state: never broadcast by DDP, restored exactly on resume)
    def get_extra_state(self) -> dict:
        """``{"count": int, "mean": 0-d float64, "var": 0-d float64}`` (CPU copies)."""
        return {
            "count": int(self.count),
            "mean": self._mean.detach().to("cpu", torch.float64).clone(),
            "var": self._var.detach().to("cpu", torch.float64).clone(),
        }

    def set_extra_state(self, state: dict) -> None:
        """Restore :meth:`get_extra_state` output.

        Raises:
            ValueError: missing keys or a negative count.
        """
        if not isinstance(state, dict) or not {"count", "mean", "var"} <= set(state):
            raise ValueError("RunningNorm extra state must be a dict with 'count', 'mean' and 'var'")
        count = int(state["count"])
        if count < 0:
            raise ValueError(f"RunningNorm extra state has a negative count {count}")
        self.count = count
        self._mean = torch.as_tensor(state["mean"], dtype=torch.float64).reshape(()).clone()
        self._var = torch.as_tensor(state["var"], dtype=torch.float64).reshape(()).clone()
