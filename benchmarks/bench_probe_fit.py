"""Does the probe fit? EVAR's fixed-lr linear probe vs kikimimi's probes vs a plain logistic regression.

Generated tasks with a known structure (Gaussian class clusters, correlated features) of different sizes; for
each, the test accuracy of:

- scikit-learn ``LogisticRegression`` (default C) on standardised embeddings (the yardstick);
- kikimimi's logistic probe (C chosen on validation) and linear probe (lr chosen on validation, early stopping
  on the validation loss);
- EVAR's protocol: one fixed lr (3e-4 BYOL-A, 3e-5 M2D), early stopping on validation accuracy.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_probe_fit.py`` (a few minutes on one core).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from kikimimi.evaluation.probe import ProbeConfig, train_probe

#: (classes, dims, class-mean spread, training clips); validation = training / 9, test = 2000.
TASKS = ((10, 512, 0.25, 1800), (10, 512, 0.12, 600), (5, 64, 0.5, 300), (30, 256, 0.3, 900), (5, 32, 0.55, 300))

PROBES = {
    "kikimimi logistic": ProbeConfig(probe="logistic"),
    "kikimimi linear": ProbeConfig(),
    "EVAR lr 3e-4": ProbeConfig(lr=3e-4, early_stop="metric"),
    "EVAR lr 3e-5": ProbeConfig(lr=3e-5, early_stop="metric"),
}


def gaussian_task(n_classes=5, dim=32, n_train=300, n_valid=60, n_test=1000, sep=0.45, seed=0):
    """Class means N(0, sep²) per dimension, unit noise, then a fixed random mixing (correlated features);
    ``((x, y) train, valid, test)``. Also the generator of tests/evaluation/test_probe_fit.py."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, sep, (n_classes, dim))
    mix = rng.normal(0, 1, (dim, dim)) / np.sqrt(dim)

    def draw(n):
        y = rng.integers(0, n_classes, n)
        return ((means[y] + rng.normal(0, 1, (n, dim))) @ mix).astype(np.float32), y

    return draw(n_train), draw(n_valid), draw(n_test)


def make_task(n_classes: int, dim: int, spread: float, n_train: int, seed: int = 0):
    """A :data:`TASKS` entry: validation = training / 9, test = 2000 clips."""
    return gaussian_task(n_classes, dim, n_train, n_train // 9, 2000, spread, seed)


def main() -> None:
    print("| task (C, D, train) | sklearn LR | " + " | ".join(PROBES) + " |")
    print("|---|---|" + "---|" * len(PROBES))
    for n_classes, dim, spread, n_train in TASKS:
        (xtr, ytr), (xva, yva), (xte, yte) = make_task(n_classes, dim, spread, n_train)
        sc = StandardScaler().fit(xtr)
        ref = LogisticRegression(max_iter=2000).fit(sc.transform(xtr), ytr).score(sc.transform(xte), yte)
        cells = []
        for cfg in PROBES.values():
            t0 = time.perf_counter()
            r = train_probe(xtr, ytr, xva, yva, xte, yte, n_classes=n_classes, config=cfg, seed=42)
            choice = {k: v for k, v in r.chosen.items() if k != "valid_scores"}
            (key, value), = choice.items()
            epochs = f", epoch {r.best_epoch}/{r.epochs_run}" if r.epochs_run else ""
            cells.append(f"{100 * r.score:.1f} ({key} {value:g}{epochs}; {time.perf_counter() - t0:.0f} s)")
        print(f"| {n_classes}, {dim}, {n_train} | {100 * ref:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
