"""2-D maps of embeddings coloured by class (t-SNE, or UMAP when the optional ``umap-learn`` package is
installed), one panel per model — the figure method papers use to show that each sound class forms its
own cluster."""

from __future__ import annotations

import inspect
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.fileio import atomic_write_bytes

#: t-SNE settings: this many iterations (sklearn's default 1,000 gave the same trustworthiness, 0.9722 on 1,000
#: points, in 1.7x the time), on one thread up to SINGLE_THREAD_MAX points.
TSNE_ITERATIONS = 500
SINGLE_THREAD_MAX = 2000


def tsne_2d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[N, D]`` → ``[N, 2]`` Barnes-Hut t-SNE of standardised embeddings (perplexity
    ``min(30, max(2, (N − 1) / 3))``, PCA init, ``TSNE_ITERATIONS`` iterations).

    Up to ``SINGLE_THREAD_MAX`` points it runs on one thread: sklearn's OpenMP threads wait on each other when
    the cores are shared, which made 1,000 points take 41 s instead of 4.7 s on a loaded 2-core machine
    (``benchmarks/bench_plot.py``). A PCA to 50 dimensions first saved no time there and lowered the
    trustworthiness (0.998 → 0.976 on 127 points), so the map is computed on every dimension.
    """
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x = StandardScaler().fit_transform(np.asarray(embeddings, dtype=np.float64))
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    iterations = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"  # sklearn < 1.5
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, **{iterations: TSNE_ITERATIONS})
    with threadpool_limits(limits=1 if len(x) <= SINGLE_THREAD_MAX else None):
        return tsne.fit_transform(x)


MAP_METHODS = ("tsne", "umap")


def import_umap():
    """The ``umap`` module of the optional ``umap-learn`` package.

    Raises:
        ImportError: not installed; the message says how to install it.
    """
    try:
        import umap
    except ImportError as exc:
        raise ImportError("UMAP maps need the optional package umap-learn, which is not installed: "
                          "run `pip install umap-learn` (or use method='tsne' / --method tsne)") from exc
    return umap


def umap_2d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[N, D]`` → ``[N, 2]`` UMAP of standardised embeddings (``n_neighbors`` adapted to small N).

    Raises:
        ImportError: ``umap-learn`` is not installed (it is optional: ``pip install umap-learn``).
    """
    umap = import_umap()
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(embeddings, dtype=np.float64))
    n_neighbors = int(min(15, max(2, len(x) - 1)))
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed)
    return np.asarray(reducer.fit_transform(x))


def map_2d(embeddings: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """``[N, D]`` → ``[N, 2]`` with ``method`` ``"tsne"`` or ``"umap"``."""
    if method == "tsne":
        return tsne_2d(embeddings, seed)
    if method == "umap":
        return umap_2d(embeddings, seed)
    raise ValueError(f"unknown map method {method!r}; choose one of {', '.join(MAP_METHODS)}")


#: Marker shapes cycled (with the colours) so up to 20 × 6 classes get a unique symbol.
_MARKERS = ("o", "s", "^", "D", "v", "P")


def class_styles(classes: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """``{class: (colour, marker)}``: ``tab10`` for ≤ 10 classes, else ``tab20``; the marker changes every
    full turn of the colour map, so no two classes share a symbol."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    return {c: (cmap(i % cmap.N), _MARKERS[(i // cmap.N) % len(_MARKERS)]) for i, c in enumerate(classes)}


def cluster_figure(panels: Mapping[str, tuple[np.ndarray, Sequence[str]]], title: str | None = None,
                   seed: int = 0, method: str = "tsne"):
    """The figure of :func:`plot_clusters` (a matplotlib ``Figure``; its single legend lists every class,
    outside the axes on the right, in ``ceil(C / 20)`` columns)."""
    if method not in MAP_METHODS:
        raise ValueError(f"unknown map method {method!r}; choose one of {', '.join(MAP_METHODS)}")
    if method == "umap":
        import_umap()  # fail before any work, with the install hint
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted({str(c) for _, labels in panels.values() for c in labels})
    styles = class_styles(classes)
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.8), squeeze=False)
    for ax, (name, (emb, labels)) in zip(axes[0], panels.items(), strict=True):
        xy = map_2d(emb, method, seed)
        labels = np.asarray([str(c) for c in labels])
        for c in classes:
            sel = labels == c
            colour, marker = styles[c]
            ax.scatter(xy[sel, 0], xy[sel, 1], s=12, color=colour, marker=marker, alpha=0.85, linewidths=0)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker=styles[c][1], linestyle="", color=styles[c][0], label=c) for c in classes]
    ncol = max(1, math.ceil(len(classes) / 20))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=ncol, fontsize=8,
               frameon=False, title=f"{len(classes)} classes", title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_clusters(panels: Mapping[str, tuple[np.ndarray, Sequence[str]]], out_png: str | Path,
                  title: str | None = None, seed: int = 0, method: str = "tsne") -> Path:
    """Draw one t-SNE (or UMAP) panel per model side by side with a shared legend of every class.

    Args:
        panels: ``{panel title: (embeddings [N, D], labels [N])}``.
        out_png: output file (written atomically; ``bbox_inches="tight"`` keeps the outside legend).
        method: ``"tsne"`` or ``"umap"`` (needs ``pip install umap-learn``; a clear ImportError otherwise).
    """
    fig = cluster_figure(panels, title, seed, method)
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    out_png = Path(out_png)
    atomic_write_bytes(out_png, buf.getvalue())
    return out_png
