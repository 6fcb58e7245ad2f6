"""2-D maps of embeddings coloured by class (t-SNE, or UMAP when the optional ``umap-learn`` package is
installed), one panel per model — the figure method papers use to show that each sound class forms its
own cluster."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kikimimi.fileio import atomic_write_bytes


def tsne_2d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[N, D]`` → ``[N, 2]`` t-SNE of standardised embeddings (perplexity adapted to small N)."""
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(embeddings, dtype=np.float64))
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


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


def plot_clusters(panels: Mapping[str, tuple[np.ndarray, Sequence[str]]], out_png: str | Path,
                  title: str | None = None, seed: int = 0, method: str = "tsne") -> Path:
    """Draw one t-SNE (or UMAP) panel per model side by side with a shared legend.

    Args:
        panels: ``{panel title: (embeddings [N, D], labels [N])}``.
        out_png: output file (written atomically).
        method: ``"tsne"`` or ``"umap"`` (needs ``pip install umap-learn``; a clear ImportError otherwise).
    """
    if method not in MAP_METHODS:
        raise ValueError(f"unknown map method {method!r}; choose one of {', '.join(MAP_METHODS)}")
    if method == "umap":
        import_umap()  # fail before any work, with the install hint
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted({str(c) for _, labels in panels.values() for c in labels})
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colours = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.8), squeeze=False)
    for ax, (name, (emb, labels)) in zip(axes[0], panels.items(), strict=True):
        xy = map_2d(emb, method, seed)
        labels = np.asarray([str(c) for c in labels])
        for c in classes:
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=12, color=colours[c], label=c, alpha=0.85, linewidths=0)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[c], label=c) for c in classes]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 8), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95 if title else 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    out_png = Path(out_png)
    atomic_write_bytes(out_png, buf.getvalue())
    return out_png
