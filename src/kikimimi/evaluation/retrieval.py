"""Audio–text retrieval metrics (WavCaps ``a2t``/``t2a`` definitions) for any number of captions per clip.

Input: a similarity matrix ``sim [n_audio, n_captions]`` (higher = more similar) and ``caption_audio
[n_captions]``, the index of the one audio clip each caption describes. Ranks are 1-based; equal scores
are ordered by index (a stable descending sort), so the result is deterministic.

- text → audio: every caption ranks all clips; its rank is that of its own clip. R@k = fraction with
  rank ≤ k; mAP@10 = mean of ``1/rank`` over captions (0 when rank > 10).
- audio → text: every clip ranks all captions; it is a hit at k when *any* of its captions is in the top k
  (rank = best rank among its captions). mAP@10 of a clip with ``n_i`` captions whose ranks inside the
  top 10 are ``r_1 < r_2 < …`` is ``Σ_m (m / r_m) / n_i`` — divided by that clip's caption count (WavCaps
  hard-codes 5). Clips without captions are distractors for text → audio and are not scored audio → text.
- median / mean rank of those ranks.

R@k and mAP values are fractions (multiply by 100 for the percentages EVAR prints).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kikimimi.audio.decode import AudioDecodeError, load_audio
from kikimimi.evaluation.caption_adapters import group_captions
from kikimimi.inference.clap import cosine_similarity
from kikimimi.models.encoder import TextAudioModel

__all__ = ["DEFAULT_KS", "format_retrieval_table", "rank_of", "retrieval_metrics"]

DEFAULT_KS = (1, 5, 10, 50)


def rank_of(scores: np.ndarray, index: int) -> int:
    """1-based rank of ``scores[index]`` in a stable descending sort of ``scores`` ``[M]``."""
    s = scores[index]
    return int(1 + np.count_nonzero(scores > s) + np.count_nonzero(scores[:index] == s))


def _ranks_in_rows(sim: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """For every row r of ``sim`` ``[R, M]``, the 1-based rank of ``sim[r, cols[r]]`` within that row."""
    target = sim[np.arange(sim.shape[0]), cols][:, None]
    greater = (sim > target).sum(axis=1)
    m = sim.shape[1]
    before = (np.arange(m)[None, :] < cols[:, None]) & (sim == target)
    return 1 + greater + before.sum(axis=1)


def _summary(ranks: np.ndarray, ks: Sequence[int], map10: float) -> dict[str, float]:
    out: dict[str, float] = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mAP@10"] = map10
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    out["n_queries"] = int(ranks.size)
    return out


def retrieval_metrics(sim: np.ndarray, caption_audio: Sequence[int] | np.ndarray, *,
                      ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """Both retrieval directions.

    Args:
        sim: ``[n_audio, n_captions]`` similarities.
        caption_audio: ``[n_captions]`` int, the audio index each caption belongs to.
        ks: recall cut-offs.

    Returns:
        ``{"text_to_audio": {...}, "audio_to_text": {...}, "n_audio", "n_captions",
        "captions_per_audio": {count: n_clips}}`` where each direction holds ``R@k``, ``mAP@10``,
        ``median_rank``, ``mean_rank``, ``n_queries`` and the per-query ``ranks`` list.

    Raises:
        ValueError: shapes disagree, an index is out of range, or no clip has a caption.
    """
    sim = np.asarray(sim, dtype=np.float64)
    cap = np.asarray(caption_audio, dtype=np.int64).reshape(-1)
    if sim.ndim != 2:
        raise ValueError(f"sim must be [n_audio, n_captions], got shape {sim.shape}")
    n_audio, n_captions = sim.shape
    if cap.size != n_captions:
        raise ValueError(f"caption_audio has {cap.size} entries but sim has {n_captions} caption columns")
    if n_captions == 0:
        raise ValueError("no captions to evaluate")
    if cap.min() < 0 or cap.max() >= n_audio:
        raise ValueError(f"caption_audio values must be in [0, {n_audio}), got {cap.min()}..{cap.max()}")
    if not np.all(np.isfinite(sim)):
        raise ValueError("sim contains NaN or infinite values")

    # text -> audio: column j ranks the clips; its own clip is cap[j]
    t2a = _ranks_in_rows(sim.T, cap)
    t2a_map = float(np.mean(np.where(t2a <= 10, 1.0 / t2a, 0.0)))

    # audio -> text: row i ranks all captions; any of its captions counts
    a2t_ranks, a2t_ap = [], []
    for i in range(n_audio):
        own = np.nonzero(cap == i)[0]
        if own.size == 0:
            continue
        row = sim[i]
        r = np.sort(np.array([rank_of(row, int(j)) for j in own]))
        a2t_ranks.append(int(r[0]))
        top = r[r <= 10]
        a2t_ap.append(float(np.sum(np.arange(1, top.size + 1) / top) / own.size) if top.size else 0.0)
    a2t = np.array(a2t_ranks)
    counts = np.bincount(cap, minlength=n_audio)
    per_clip = {int(c): int(n) for c, n in zip(*np.unique(counts, return_counts=True), strict=True)}
    result: dict[str, Any] = {
        "text_to_audio": {**_summary(t2a, ks, t2a_map), "ranks": t2a.tolist()},
        "audio_to_text": {**_summary(a2t, ks, float(np.mean(a2t_ap))), "ranks": a2t.tolist()},
        "n_audio": int(n_audio),
        "n_captions": int(n_captions),
        "captions_per_audio": per_clip,
    }
    return result


def format_retrieval_table(metrics: dict[str, Any]) -> str:
    """A markdown table of both directions (R@k and mAP@10 in %, ranks as numbers)."""
    t2a, a2t = metrics["text_to_audio"], metrics["audio_to_text"]
    ks = [k for k in t2a if k.startswith("R@")]
    cols = ks + ["mAP@10", "median_rank", "mean_rank", "n_queries"]
    lines = ["| direction | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, d in (("audio→text", a2t), ("text→audio", t2a)):
        cells = [f"{100 * d[c]:.2f}" for c in ks + ["mAP@10"]]
        cells += [f"{d['median_rank']:g}", f"{d['mean_rank']:.2f}", str(d["n_queries"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_retrieval(model: TextAudioModel, rows: Sequence[tuple[Any, str]], *, batch_size: int = 8,
                       ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """Retrieval metrics of a CLAP model on ``(audio path, caption)`` rows (several captions per file).

    Each audio file is encoded whole (EVAR ``retr_a2t_t2a.py``). Unreadable files are reported under
    ``"errors"`` (``[[path, reason], …]``) and left out together with their captions.
    """
    files, captions, owner = group_captions(rows)
    waves, keep, errors = [], [], []
    sr = int(model.sample_rate)
    for i, path in enumerate(files):
        try:
            waves.append(load_audio(path, sr)[0])
            keep.append(i)
        except AudioDecodeError as exc:
            errors.append([str(path), exc.reason])
    if not keep:
        raise ValueError("no readable audio file among the captioned clips")
    new_index = {old: new for new, old in enumerate(keep)}
    cap_idx = [j for j, o in enumerate(owner) if o in new_index]
    audio_emb = np.asarray(model.encode_audio(waves, sample_rate=sr, batch_size=batch_size), dtype=np.float32)
    text_emb = np.asarray(model.encode_text([captions[j] for j in cap_idx]), dtype=np.float32)
    sim = cosine_similarity(audio_emb, text_emb)
    metrics = retrieval_metrics(sim, [new_index[owner[j]] for j in cap_idx], ks=ks)
    metrics["files"] = [str(files[i]) for i in keep]
    metrics["errors"] = errors
    return metrics
