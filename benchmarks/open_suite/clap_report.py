"""Pure logic of the open suite's audio–language benchmark (``run_clap.py``): caption sides, held-out prompts,
prompt-ensemble zero-shot scoring, chance levels and the results table. No model, no file besides CSV/JSON.

Shapes: audio embeddings ``[N, D]``, prompt embeddings ``[P, D]`` (any scale; cosine is used), class indices
``[N]`` / ``[P]`` int. Scores are fractions (the tables print percent).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CAPTION_COLUMNS = ("file_name", "caption", "split")
#: retrieval cut-offs reported by the benchmark
KS = (1, 5, 10)
RETRIEVAL_COLUMNS = tuple(f"R@{k}" for k in KS) + ("mAP@10",)


# ---------------------------------------------------------------------------------------------- caption sides
def read_caption_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of the suite's ``captions.csv`` (``file_name,caption,split,…``; ``split`` is ``train`` or ``test``).

    Raises:
        ValueError: missing file or columns, an empty caption or an unknown split (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"'{path}': caption file not found (run build_data.py first)")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CAPTION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"'{path}': columns {missing} missing (have {reader.fieldnames})")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row["file_name"].strip() or not row["caption"].strip():
                raise ValueError(f"'{path}' line {line}: empty file_name or caption")
            if row["split"] not in ("train", "test"):
                raise ValueError(f"'{path}' line {line}: split must be train or test, got {row['split']!r}")
            rows.append(row)
    if not rows:
        raise ValueError(f"'{path}': no caption rows")
    return rows


def captions_by_file(rows: Sequence[Mapping[str, str]], split: str) -> dict[str, list[str]]:
    """``{file_name: [caption, …]}`` of one side, files and captions in row order."""
    out: dict[str, list[str]] = {}
    for r in rows:
        if r["split"] == split:
            out.setdefault(r["file_name"], []).append(r["caption"].strip())
    return out


def check_sides(rows: Sequence[Mapping[str, str]], source: str = "captions") -> None:
    """Raise ``ValueError`` when a file or a template (column ``template`` if present) is on both sides,
    or when a side is empty."""
    train, test = captions_by_file(rows, "train"), captions_by_file(rows, "test")
    if not train or not test:
        raise ValueError(f"'{source}': needs train and test captions (have {len(train)} / {len(test)} files)")
    both = sorted(set(train) & set(test))
    if both:
        raise ValueError(f"'{source}': file '{both[0]}' has captions on both sides ({len(both)} files)")
    if rows and "template" in rows[0]:
        sides: dict[str, set[str]] = {}
        for r in rows:
            sides.setdefault(r["template"], set()).add(r["split"])
        bad = sorted(t for t, s in sides.items() if len(s) > 1)
        if bad:
            raise ValueError(f"'{source}': template '{bad[0]}' is used on both sides")


def training_table_rows(rows: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Train side as one row per file: ``file_name, caption_1 … caption_K`` (empty cells when fewer)."""
    train = captions_by_file(rows, "train")
    k = max(len(c) for c in train.values())
    return [{"file_name": f, **{f"caption_{i + 1}": (caps[i] if i < len(caps) else "") for i in range(k)}}
            for f, caps in train.items()]


# ---------------------------------------------------------------------------------------------- zero-shot prompts
def _norm_text(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


def held_out_prompts(labels: Mapping[str, Sequence[str]],
                     train_captions: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """Drop the zero-shot prompts that are also training captions (case, spacing and a final period ignored).

    Args:
        labels: ``{class: [prompt, …]}`` of one task (``zeroshot_labels.json``).
        train_captions: every training caption.

    Returns:
        ``(kept {class: prompts}, excluded {class: prompts}, fallback classes)``; a class all of whose prompts
        are training captions keeps them all and is listed in ``fallback``.
    """
    seen = {_norm_text(c) for c in train_captions}
    kept: dict[str, list[str]] = {}
    excluded: dict[str, list[str]] = {}
    fallback: list[str] = []
    for label, prompts in labels.items():
        prompts = [str(p) for p in prompts]
        if not prompts:
            raise ValueError(f"zero-shot class '{label}' has no prompt")
        new = [p for p in prompts if _norm_text(p) not in seen]
        excluded[label] = [p for p in prompts if _norm_text(p) in seen]
        if not new:
            new = prompts
            fallback.append(label)
        kept[label] = new
    return kept, excluded, fallback


def prompt_matrix(labels: Mapping[str, Sequence[str]], classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Flatten ``{class: prompts}`` in ``classes`` order: ``(prompts [P], class index [P] int64)``.

    Raises:
        ValueError: a class of the task has no prompt, or a prompt class is not a task class.
    """
    missing = [c for c in classes if c not in labels]
    extra = [c for c in labels if c not in classes]
    if missing or extra:
        raise ValueError(f"zero-shot labels do not match the task classes: missing {missing}, unknown {extra}")
    prompts: list[str] = []
    owner: list[int] = []
    for i, c in enumerate(classes):
        prompts += list(labels[c])
        owner += [i] * len(labels[c])
    return prompts, np.asarray(owner, dtype=np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_text_embeddings(prompt_emb: np.ndarray, prompt_class: np.ndarray, n_classes: int) -> np.ndarray:
    """Prompt ensemble: mean of the unit prompt embeddings of each class, re-normalised → ``[C, D]``."""
    e = _unit(prompt_emb)
    out = np.zeros((n_classes, e.shape[1]))
    np.add.at(out, np.asarray(prompt_class), e)
    if np.any(np.bincount(prompt_class, minlength=n_classes) == 0):
        raise ValueError("every class needs at least one prompt")
    return _unit(out)


def zero_shot_predict(audio_emb: np.ndarray, prompt_emb: np.ndarray, prompt_class: np.ndarray,
                      n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of every clip with every class's prompt ensemble: ``(scores [N, C], predicted class [N])``."""
    scores = _unit(audio_emb) @ class_text_embeddings(prompt_emb, prompt_class, n_classes).T
    return scores.astype(np.float32), scores.argmax(axis=1)


def per_prompt_accuracy(audio_emb: np.ndarray, prompt_emb: np.ndarray, prompt_class: np.ndarray,
                        targets: np.ndarray, n_classes: int) -> list[float]:
    """Accuracy with the j-th prompt of every class alone, for j = 0 … (fewest prompts per class) − 1."""
    prompt_class = np.asarray(prompt_class)
    per_class = [np.nonzero(prompt_class == c)[0] for c in range(n_classes)]
    out = []
    for j in range(min(len(ix) for ix in per_class)):
        pick = np.array([ix[j] for ix in per_class])
        _, pred = zero_shot_predict(audio_emb, prompt_emb[pick], np.arange(n_classes), n_classes)
        out.append(float(np.mean(pred == np.asarray(targets))))
    return out


# ---------------------------------------------------------------------------------------------- chance levels
def chance_zero_shot(n_classes: int) -> float:
    """Expected accuracy of a uniformly random guess: ``1 / C`` (whatever the class balance)."""
    return 1.0 / n_classes


def chance_retrieval(caption_audio: Sequence[int], n_audio: int, seed: int = 0, draws: int = 10) -> dict[str, Any]:
    """Chance level: retrieval metrics of seeded random scores ``[n_audio, n_captions]``, averaged over ``draws``.

    Returns ``{"text_to_audio": {R@1, R@5, R@10, mAP@10}, "audio_to_text": {…}, "draws": draws}``.
    """
    from kikimimi.evaluation.retrieval import retrieval_metrics

    rng = np.random.default_rng(seed)
    runs = [retrieval_metrics(rng.standard_normal((n_audio, len(caption_audio))), caption_audio, ks=KS)
            for _ in range(draws)]
    out: dict[str, Any] = {d: {c: float(np.mean([r[d][c] for r in runs])) for c in RETRIEVAL_COLUMNS}
                           for d in ("text_to_audio", "audio_to_text")}
    out["draws"] = draws
    return out


def retrieval_summary(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{"text_to_audio": {R@1, R@5, R@10, mAP@10}, "audio_to_text": {…}}`` from ``retrieval_metrics`` output."""
    return {d: {c: float(metrics[d][c]) for c in RETRIEVAL_COLUMNS} for d in ("text_to_audio", "audio_to_text")}


# ---------------------------------------------------------------------------------------------- table
def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def results_table(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the one results table.

    Each row: ``{"model": str, "zero_shot": {task: acc} | None, "retrieval": retrieval_summary | None,
    "probe": {task: acc} | None, "note": str}``. Columns: model, zero-shot per task, text→audio R@1/5/10 +
    mAP@10, audio→text the same, probe average over ``tasks`` (— when a part is missing).
    """
    header = (["model"] + [f"ZS {t}" for t in tasks] + [f"T→A {c}" for c in RETRIEVAL_COLUMNS]
              + [f"A→T {c}" for c in RETRIEVAL_COLUMNS] + ["probe avg"])
    cells = []
    for r in rows:
        zs = r.get("zero_shot") or {}
        ret = r.get("retrieval")
        probe = r.get("probe") or {}
        line = [str(r["model"])] + [_pct(zs.get(t)) for t in tasks]
        for d in ("text_to_audio", "audio_to_text"):
            line += [_pct(ret[d][c]) if ret else "—" for c in RETRIEVAL_COLUMNS]
        have = [probe[t] for t in tasks if probe.get(t) is not None]
        line.append(_pct(float(np.mean(have))) if len(have) == len(tasks) else "—")
        cells.append(line)
    return header, cells


def markdown_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A markdown table from a header and rows of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)
