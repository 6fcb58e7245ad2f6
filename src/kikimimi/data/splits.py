"""Leakage-free split helpers for task CSVs built from registry audio (pure Python, no audio, no network).

Used by ``kikimimi demo`` and ``benchmarks/open_suite``.

A *row* is a ``dict`` with at least ``file_name``, ``label`` and ``split`` (``train`` / ``valid`` /
``test``) plus any grouping columns (``prompt``, ``kit``, ``program`` …). Groups never straddle splits.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

SPLITS = ("train", "valid", "test")

__all__ = ["SPLITS", "LeakageError", "check_no_leakage", "check_disjoint_files", "covering_group_split",
           "split_counts", "summarise_rows"]


class LeakageError(ValueError):
    """A file or a group appears on two sides of a split (or in both the evaluation and pre-training sets)."""


def check_no_leakage(rows: Iterable[Mapping[str, str]], group_key: str | None = None, *, name: str = "task") -> None:
    """Assert that no file and (when ``group_key`` is given) no group value appears in two splits.

    Args:
        rows: task rows with ``file_name`` and ``split`` (and ``group_key``).
        group_key: column whose values must stay inside one split (e.g. ``"prompt"``, ``"kit"``, ``"program"``).
        name: task name used in the error message.

    Raises:
        LeakageError: naming the task, the offending file or group and the splits it was found in.
    """
    rows = list(rows)
    for i, row in enumerate(rows):
        for key in ("file_name", "split", *([group_key] if group_key else [])):
            if key not in row:
                raise LeakageError(f"{name}: row {i} has no '{key}' column")
    counts = Counter(str(r["file_name"]) for r in rows)
    dup = sorted(f for f, c in counts.items() if c > 1)
    if dup:
        raise LeakageError(f"{name}: file '{dup[0]}' is listed {counts[dup[0]]} times")
    if group_key:
        sides: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            sides[str(row[group_key])].add(str(row["split"]))
        bad = sorted((v, s) for v, s in sides.items() if len(s) > 1)
        if bad:
            value, where = bad[0]
            raise LeakageError(f"{name}: {group_key} '{value}' appears in splits {sorted(where)} "
                               f"({len(bad)} {group_key} value(s) leak)")


def check_disjoint_files(eval_files: Iterable[str], pool_files: Iterable[str], *,
                         what: str = "pre-training pool") -> None:
    """Assert that no evaluation file (nor its original source) is in the pre-training pool.

    Raises:
        LeakageError: naming one shared file and how many there are.
    """
    shared = set(map(str, eval_files)) & set(map(str, pool_files))
    if shared:
        raise LeakageError(f"{len(shared)} evaluation file(s) are also in the {what}, e.g. '{sorted(shared)[0]}'")


def split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Group counts per split for ``n`` groups (each non-zero-ratio split gets ≥ 1 group when ``n`` allows)."""
    total = float(sum(ratios))
    counts = [int(round(n * r / total)) for r in ratios]
    for i, r in enumerate(ratios):
        if r > 0 and counts[i] == 0 and n >= sum(1 for x in ratios if x > 0):
            counts[i] = 1
    while sum(counts) > n:
        counts[int(np.argmax(counts))] -= 1
    counts[0] += n - sum(counts)
    return counts


def covering_group_split(
    group_labels: Mapping[str, Iterable[str]],
    ratios: Sequence[float] = (0.6, 0.15, 0.25),
    seed: int = 0,
    *,
    max_tries: int = 2000,
    require: Sequence[str] = SPLITS,
) -> dict[str, str]:
    """Seeded split of groups (kits, programs, prompts) so that every class appears in every required split.

    Args:
        group_labels: ``{group: labels of its items}``.
        ratios: train/valid/test fractions of the groups.
        seed: seed of the ``numpy`` generator that shuffles the groups (one permutation per try).
        max_tries: permutations tried before giving up.
        require: splits that must contain every class (classes seen in fewer groups than required splits
            are impossible to cover; they raise).

    Returns:
        ``{group: split}``.

    Raises:
        ValueError: no permutation within ``max_tries`` covers every class in every required split.
    """
    groups = sorted(group_labels)
    labels = {g: set(group_labels[g]) for g in groups}
    classes = set().union(*labels.values()) if labels else set()
    counts = split_counts(len(groups), ratios)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        order = rng.permutation(len(groups))
        mapping: dict[str, str] = {}
        start = 0
        for split, c in zip(SPLITS, counts, strict=True):
            for i in order[start : start + c]:
                mapping[groups[int(i)]] = split
            start += c
        seen: dict[str, set[str]] = defaultdict(set)
        for g, s in mapping.items():
            seen[s] |= labels[g]
        if all(seen[s] >= classes for s in require if counts[SPLITS.index(s)] > 0):
            return mapping
    missing = {c: sum(c in labels[g] for g in groups) for c in sorted(classes)}
    raise ValueError(f"cannot split {len(groups)} groups so that every class is in {list(require)} "
                     f"(groups per class: {missing})")


def summarise_rows(rows: Iterable[Mapping[str, str]]) -> dict[str, dict[str, int]]:
    """``{label: {split: count}}`` plus a ``"_total"`` entry per split."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for r in rows:
        out[str(r["label"])][str(r["split"])] += 1
        out["_total"][str(r["split"])] += 1
    return {k: dict(v) for k, v in sorted(out.items())}
