"""`kikimimi plot` speed: the t-SNE map before and after issue 33.5, on the same machine (prints figures; no pass/fail).

Embeddings: ``N`` rows of ``D`` dims (3,840 = an M2D ViT-Base clip embedding) in 10 Gaussian clusters.
1. "before": the old recipe (standardise → sklearn TSNE, init PCA, sklearn's default iterations (1,000) and
   threads); "after": :func:`kikimimi.evaluation.cluster_plot.tsne_2d` (500 iterations, one thread up to 2,000
   points). Each with sklearn's trustworthiness (10 neighbours), so speed is not bought with quality.
2. The whole command, ``kikimimi plot E.npy --labels L.csv -o map.png``, in a subprocess (imports and drawing
   included), wall and CPU seconds. Target: under 5 s for 1,000 points on 2 cores.

Usage: ``python benchmarks/bench_plot.py [--points 127 1000] [--dims 3840] [--skip-before]``
"""

from __future__ import annotations

import argparse
import inspect
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import cpu_model  # noqa: E402  (benchmarks/ is the script's folder)


def clusters(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    labels = [f"c{i % 10}" for i in range(n)]
    centres = rng.normal(size=(10, d)) * 0.3
    x = rng.normal(size=(n, d)) + centres[[i % 10 for i in range(n)]]
    return x.astype(np.float32), labels


def tsne_before(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The map as `plot` drew it before: every dimension, sklearn's default iterations and thread count."""
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit_transform(np.asarray(x, dtype=np.float64))
    perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[127, 1000])
    parser.add_argument("--dims", type=int, default=3840)
    parser.add_argument("--skip-before", action="store_true", help="only time the current code")
    args = parser.parse_args()
    from sklearn import __version__ as sklearn_version
    from sklearn.manifold import TSNE, trustworthiness

    from kikimimi.evaluation.cluster_plot import tsne_2d

    load = os.getloadavg()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, load {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
          f"scikit-learn {sklearn_version} (TSNE iterations: "
          f"{'max_iter' if 'max_iter' in inspect.signature(TSNE).parameters else 'n_iter'})")
    for n in args.points:
        x, labels = clusters(n, args.dims)
        rows = [("after", tsne_2d)] + ([] if args.skip_before else [("before", tsne_before)])
        for name, fn in rows:
            t = time.perf_counter()
            xy = fn(x)
            dt = time.perf_counter() - t
            trust = trustworthiness(x.astype(np.float64), xy, n_neighbors=min(10, n // 2 - 1))
            print(f"{n:5d} points × {args.dims} dims  t-SNE {name:6s}: {dt:6.2f} s  trustworthiness {trust:.4f}")
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "e.npy", x)
            (Path(tmp) / "l.csv").write_text("file_name,label\n" + "".join(f"f{i}.wav,{c}\n"
                                                                          for i, c in enumerate(labels)))
            cmd = [sys.executable, "-m", "kikimimi", "plot", str(Path(tmp) / "e.npy"), "--labels",
                   str(Path(tmp) / "l.csv"), "-o", str(Path(tmp) / "map.png")]
            t, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            print(f"{n:5d} points  `kikimimi plot` whole command (after): {wall:6.2f} s wall, {cpu:.2f} s CPU "
                  "(≈ the wall time on an idle machine: one thread)")
    load = os.getloadavg()
    print(f"load at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    main()
