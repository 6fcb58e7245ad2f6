"""Windows over a long recording: the one rule of ``tag``, ``search``/``index`` and ``caption``.

:func:`window_bounds` turns a clip length in samples and a window / hop in seconds into sample ranges
``[(start, end), …]``. One rounding rule: a length in seconds becomes ``round(seconds × sample_rate)`` samples
(the nearest sample; Python's ``round``, halves to even), so 0.7 s at 16 kHz is 11 200 samples, never 11 199
from a float product just under it. Window ``i`` starts at ``i × hop`` samples.

Two ways to end (``tail``):

- ``"full"`` (tag, search): every window has the window's length; when the last one stops short of the end of
  the clip, one more window ends exactly at the end (it overlaps the one before). A clip no longer than one
  window is one window ``(0, n_samples)``.
- ``"merge"`` (caption; non-overlapping windows, ``hop_s`` = ``window_s``): a clip shorter than 1.5 windows is
  one window; after the last full window, a remainder longer than a quarter window is a shorter window of its
  own, a shorter one joins the window before it (which then ends at the end of the clip).
"""

from __future__ import annotations

__all__ = ["TAILS", "seconds_to_samples", "window_bounds"]

TAILS = ("full", "merge")


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
    """``round(seconds × sample_rate)``: the rounding rule of every window length and hop."""
    return int(round(float(seconds) * int(sample_rate)))


def window_bounds(n_samples: int, sample_rate: int, window_s: float, hop_s: float | None = None, *,
                  tail: str = "full") -> list[tuple[int, int]]:
    """Sample ranges ``[(start, end), …]`` (end exclusive, in time order) covering a clip of ``n_samples``.

    Args:
        n_samples: clip length in samples (≥ 0). sample_rate: in Hz.
        window_s: window length in seconds; ``<= 0`` = the whole clip as one window.
        hop_s: seconds between window starts (at least one sample); ``None`` = ``window_s``.
        tail: ``"full"`` or ``"merge"`` (module docstring); ``"merge"`` needs ``hop_s`` = ``window_s``.

    Raises:
        ValueError: an unknown ``tail``, or ``"merge"`` with overlapping windows.
    """
    if tail not in TAILS:
        raise ValueError(f"window tail {tail!r}: expected one of {', '.join(TAILS)}")
    n = int(n_samples)
    win = seconds_to_samples(window_s, sample_rate)
    hop = win if hop_s is None else seconds_to_samples(hop_s, sample_rate)
    if tail == "merge" and hop != win:
        raise ValueError(f"window tail 'merge' needs non-overlapping windows (hop {hop_s} s, window {window_s} s)")
    hop = max(1, hop)
    if window_s <= 0 or win <= 0 or n <= win:
        return [(0, n)]
    if tail == "merge":
        if 2 * n < 3 * win:  # shorter than 1.5 windows
            return [(0, n)]
        full, rest = divmod(n, win)
        starts = list(range(0, full * win, win))
        if rest and 4 * rest > win:  # more than a quarter window left: a window of its own
            starts.append(full * win)
        return [(s, s + win) for s in starts[:-1]] + [(starts[-1], n)]
    bounds = [(s, s + win) for s in range(0, n - win + 1, hop)]
    if bounds[-1][1] < n:
        bounds.append((n - win, n))
    return bounds
