"""Caption metrics as the audio-captioning field reports them (DCASE task 6 / COCO caption evaluation).

Scores come from the reference implementation, ``pycocoevalcap`` (the ``caption`` extra), never from
re-written formulas: BLEU-1..4 (``Bleu(4)``), METEOR 1.5 (``Meteor``, needs Java), ROUGE-L (``Rouge``),
CIDEr-D (``Cider``: the COCO implementation with the Gaussian length penalty σ = 6 and clipped counts, i.e.
CIDEr-D), and SPICE / SPIDEr = (CIDEr-D + SPICE) / 2 only when SPICE can run offline — it needs the Stanford
CoreNLP 3.6.0 jars inside ``pycocoevalcap/spice/lib``, which pycocoevalcap would otherwise download; kikimimi
never downloads them and reports SPICE as unavailable instead.

Captions are tokenised as COCO does (Stanford PTBTokenizer, lower case, punctuation removed; Java). Without
Java a plain lower-case word split with the same punctuation removal is used and METEOR is unavailable; the
scores say which tokeniser they used. The vocabulary size (distinct words of the predicted captions, after that
tokenisation) is always reported.

The DCASE 2024 task 6 set adds SPIDEr-FL (SPIDEr × 0.1 for captions the fluency-error detector flags), FENSE
(Sentence-BERT similarity with the same penalty) and FER (the share of flagged captions). They come from
``aac-metrics`` (the ``aacmetrics`` extra) and only when it and the model files it reads are already on this
machine — :func:`dcase2024_status` names each missing file; kikimimi never downloads them, and without them
today's metrics above remain the whole (offline) report.

Also here: the nearest-neighbour baseline (the caption of the closest training clip in the audio embedding
space, cosine) and the readers behind ``kikimimi eval-captions PRED.csv REF.csv``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.data.captions import CaptionError, read_caption_rows

__all__ = [
    "METRIC_NAMES",
    "CaptionScores",
    "caption_scores",
    "dcase2024_status",
    "distinctive_phrases",
    "vocabulary_size",
    "evaluate_caption_files",
    "evaluate_captions",
    "java_available",
    "metrics_table",
    "named_class",
    "nearest_neighbour_captions",
    "read_predictions",
    "read_references",
    "spice_status",
]

#: the DCASE 2024 metrics computed by aac-metrics (when it and its model files are installed)
DCASE2024_METRICS = ("SPIDEr-FL", "FENSE", "FER")
#: every metric name, in report order
METRIC_NAMES = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr-D", "SPICE", "SPIDEr",
                *DCASE2024_METRICS)
CAPTION_EXTRA_HINT = 'pip install "kikimimi[caption]"'
AAC_METRICS_HINT = 'pip install "kikimimi[aacmetrics]"'
#: aac-metrics' names of what :data:`DCASE2024_METRICS` reports
_AAC_NAMES = {"SPIDEr-FL": "spider_fl", "FENSE": "fense", "FER": "fer"}
#: the fluency-error detector (FER, FENSE, SPIDEr-FL) and the Sentence-BERT model (FENSE) aac-metrics loads
FER_CHECKPOINT = "echecker_clotho_audiocaps_base.ckpt"
SBERT_MODEL = "sentence-transformers/paraphrase-TinyBERT-L6-v2"
#: the punctuation tokens pycocoevalcap's PTBTokenizer drops
_PUNCT = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_SIMPLE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


@dataclass
class CaptionScores:
    """Corpus-level scores (``scores``: name → value), the metrics that could not run and why, the number of
    clips, the tokeniser used (``ptb`` or ``simple``) and the vocabulary size (distinct words of the predicted
    captions after that tokenisation)."""

    scores: dict[str, float]
    unavailable: dict[str, str] = field(default_factory=dict)
    n: int = 0
    tokenizer: str = "ptb"
    vocabulary: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coco() -> Any:
    try:
        import pycocoevalcap  # noqa: F401
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as exc:
        raise ImportError(f"caption metrics need the package 'pycocoevalcap' ({exc}); {CAPTION_EXTRA_HINT}") from exc
    return Bleu, Rouge, Cider


def java_available() -> bool:
    return shutil.which("java") is not None


def spice_status() -> tuple[bool, str]:
    """``(True, "")`` when SPICE can run offline, else ``(False, reason)``."""
    if not java_available():
        return False, "needs Java (Debian: default-jre-headless)"
    try:
        import pycocoevalcap.spice as spice_pkg
    except ImportError:
        return False, f"needs pycocoevalcap; {CAPTION_EXTRA_HINT}"
    lib = Path(next(iter(spice_pkg.__path__))) / "lib"
    jars = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
    missing = [j for j in jars if not (lib / j).is_file()]
    if missing:
        return False, (f"needs the Stanford CoreNLP 3.6.0 jars in {lib} ({', '.join(missing)} missing); "
                       "kikimimi does not download them")
    return True, ""


def _aac_cache(aac: Any) -> Path:
    """aac-metrics' cache folder (``AAC_METRICS_CACHE_PATH``, default ``~/.cache``)."""
    if aac is not None:
        return Path(aac.utils.globals.get_default_cache_path()).expanduser()
    return Path(os.environ.get("AAC_METRICS_CACHE_PATH") or "~/.cache").expanduser()


def _fense_data() -> Path:
    """Where aac-metrics keeps the fluency-error detector: ``FENSE_DATA``, default ``<torch hub>/fense_data``."""
    if os.environ.get("FENSE_DATA"):
        return Path(os.environ["FENSE_DATA"]).expanduser()
    import torch

    return Path(torch.hub.get_dir()) / "fense_data"


def _hub_cached(repo_id: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def dcase2024_status() -> dict[str, str]:
    """For each of :data:`DCASE2024_METRICS`: ``""`` when aac-metrics can compute it offline, else one line saying
    exactly what is missing (the package, Java, or the files with their paths). Nothing is downloaded.

    SPIDEr-FL needs Java, aac-metrics' SPICE (``<cache>/aac-metrics/spice/spice-1.0.jar`` and its ``lib/``
    folder) and the fluency-error detector; FER needs the detector (``<FENSE_DATA>/`` :data:`FER_CHECKPOINT`);
    FENSE the detector and the Sentence-BERT model :data:`SBERT_MODEL` in the Hugging Face cache. The captions
    are tokenised first with aac-metrics' Stanford tokenizer (``<cache>/aac-metrics/stanford_nlp/
    stanford-corenlp-3.4.1.jar``, Java) when it is there, else given as they are.
    """
    try:
        import aac_metrics
        import aac_metrics.utils.globals  # noqa: F401
    except ImportError as exc:
        why = f"needs the package 'aac-metrics' ({exc}); {AAC_METRICS_HINT}"
        return dict.fromkeys(DCASE2024_METRICS, why)
    cache = _aac_cache(aac_metrics)
    detector = _fense_data() / FER_CHECKPOINT
    spice = cache / "aac-metrics" / "spice"
    need_fer = [] if detector.is_file() else [str(detector)]
    need_spice = [str(p) for p in (spice / "spice-1.0.jar", spice / "lib") if not p.exists()]
    need_sbert = [] if _hub_cached(SBERT_MODEL, "modules.json") else [f"the Hugging Face model {SBERT_MODEL} "
                                                                          "(not in the Hub cache)"]
    hint = "kikimimi does not download them (aac-metrics-download and a first online run fetch them)"

    def line(missing: list[str], java: bool = False) -> str:
        parts = (["Java (Debian: default-jre-headless)"] if java and not java_available() else []) + missing
        return f"aac-metrics is missing {'; '.join(parts)}; {hint}" if parts else ""

    return {"SPIDEr-FL": line(need_spice + need_fer, java=True), "FENSE": line(need_fer + need_sbert),
            "FER": line(need_fer)}


def _dcase2024_scores(candidates: list[str], references: list[list[str]], metrics: Sequence[str],
                      device: str = "cpu") -> dict[str, float]:
    """The corpus scores of ``metrics`` (names of :data:`DCASE2024_METRICS`) by aac-metrics' own ``evaluate``."""
    import aac_metrics
    from aac_metrics.functional.evaluate import evaluate

    cache = _aac_cache(aac_metrics)
    ptb = java_available() and (cache / "aac-metrics" / "stanford_nlp" / "stanford-corenlp-3.4.1.jar").is_file()
    with _quiet_children((1, 2)):
        corpus, _ = evaluate(candidates, references, preprocess=ptb, metrics=[_AAC_NAMES[m] for m in metrics],
                             device=device, verbose=0)
    return {m: float(corpus[_AAC_NAMES[m]]) for m in metrics}


def vocabulary_size(tokenized: Mapping[Any, Sequence[str]]) -> int:
    """The number of distinct words in tokenised captions (key → captions, words separated by spaces)."""
    return len({w for captions in tokenized.values() for c in captions for w in c.split()})


def _simple_tokenize(texts: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    return {k: [" ".join(w for w in _SIMPLE.findall(t.lower()) if w not in _PUNCT) for t in v]
            for k, v in texts.items()}


@contextlib.contextmanager
def _quiet_children(fds: Sequence[int] = (2,)) -> Iterator[None]:
    """Silence what child processes started inside write to ``fds`` (the Java tools' "PTBTokenizer tokenized …"
    and SPICE's progress lines): those file descriptors point at the null device meanwhile (Python's own
    streams are flushed first; nothing is silenced where they cannot be duplicated)."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(fd) for fd in fds]
    except OSError:
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
        yield
    finally:
        for fd, keep in zip(fds, saved, strict=True):
            os.dup2(keep, fd)
            os.close(keep)
        os.close(null)


def _tokenize(texts: Mapping[Any, Sequence[str]], tokenizer: str) -> tuple[dict[Any, list[str]], str]:
    if tokenizer == "simple" or (tokenizer == "auto" and not java_available()):
        return _simple_tokenize(texts), "simple"
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with _quiet_children():
        return PTBTokenizer().tokenize({k: [{"caption": t} for t in v] for k, v in texts.items()}), "ptb"


def caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], *,
                   tokenizer: str = "auto", meteor: bool = True, spice: bool = True,
                   dcase2024: bool = True) -> CaptionScores:
    """Corpus-level caption metrics of ``predictions`` (key → one caption) against ``references`` (key → one or
    more captions).

    Args:
        tokenizer: ``"auto"`` (PTB with Java, else simple), ``"ptb"`` or ``"simple"``.
        meteor: compute METEOR (a Java process that takes seconds to start).
        spice: try SPICE / SPIDEr (only when :func:`spice_status` says it can run).
        dcase2024: try SPIDEr-FL, FENSE and FER through aac-metrics, each only when :func:`dcase2024_status` says
            it can run offline (else it is named unavailable with what is missing).

    Raises:
        ValueError: no predictions, or keys of the predictions without references.
    """
    Bleu, Rouge, Cider = _coco()
    keys = sorted(predictions)
    if not keys:
        raise ValueError("no predicted captions to score")
    missing = [k for k in keys if not references.get(k)]
    if missing:
        raise ValueError(f"{len(missing)} predicted clips have no reference caption, e.g. {missing[:3]}")
    res, tok_name = _tokenize({k: [predictions[k]] for k in keys}, tokenizer)
    gts, _ = _tokenize({k: list(references[k]) for k in keys}, tok_name)
    scores: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"BLEU_{i + 1}": float(b) for i, b in enumerate(bleu)})
    if not meteor:
        unavailable["METEOR"] = "left out (meteor=False)"
    elif java_available():
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            scores["METEOR"] = float(scorer.compute_score(gts, res)[0])
        finally:
            _close_meteor(scorer)
    else:
        unavailable["METEOR"] = "needs Java (Debian: default-jre-headless)"
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
    ok, why = spice_status() if spice else (False, "not requested")
    if ok:
        from pycocoevalcap.spice.spice import Spice

        with _quiet_children((1, 2)):
            scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
        scores["SPIDEr"] = (scores["CIDEr-D"] + scores["SPICE"]) / 2
    else:
        unavailable["SPICE"] = unavailable["SPIDEr"] = why
    status = dcase2024_status() if dcase2024 else dict.fromkeys(DCASE2024_METRICS, "left out (dcase2024=False)")
    unavailable.update({m: why for m, why in status.items() if why})
    ready = [m for m in DCASE2024_METRICS if not status[m]]
    if ready:
        try:
            scores.update(_dcase2024_scores([predictions[k] for k in keys], [list(references[k]) for k in keys],
                                            ready))
        except Exception as exc:  # noqa: BLE001 - a third-party scorer: its failure is reported, the rest stands
            first = (str(exc).splitlines() or [""])[0][:300]
            unavailable.update(dict.fromkeys(ready, f"aac-metrics failed ({type(exc).__name__}: {first})"))
    return CaptionScores(scores, unavailable, len(keys), tok_name, vocabulary_size(res))


def _close_meteor(meteor: Any) -> None:
    """Stop the METEOR Java process (pycocoevalcap versions differ in how)."""
    close = getattr(meteor, "close", None)
    if callable(close):
        close()
        return
    proc = getattr(meteor, "meteor_p", None)
    if proc is not None:
        with meteor.lock:
            proc.stdin.close()
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------- baseline
def nearest_neighbour_captions(train_embeddings: np.ndarray, train_captions: Sequence[str],
                               query_embeddings: np.ndarray) -> list[str]:
    """For each query ``[M, D]``, the caption of the training clip ``[N, D]`` with the highest cosine similarity."""
    a = np.asarray(train_embeddings, dtype=np.float64)
    q = np.asarray(query_embeddings, dtype=np.float64)
    if a.shape[0] != len(train_captions):
        raise ValueError(f"{a.shape[0]} training embeddings but {len(train_captions)} captions")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return [train_captions[int(i)] for i in (q @ a.T).argmax(axis=1)]


def named_class(text: str, class_phrases: Mapping[str, str]) -> str | None:
    """The class whose phrase a caption names: ``class_phrases`` maps class → phrase (``"am_tone"`` →
    ``"am tone"``); phrases match whole words, case-insensitively, and the longest match wins (so "an am tone"
    names ``am_tone``, not ``tone``). ``None`` when no phrase occurs."""
    low = f" {re.sub(r'[^a-z0-9-]+', ' ', str(text).lower())} "
    best: tuple[int, str] | None = None
    for cls, phrase in class_phrases.items():
        p = " ".join(re.sub(r"[^a-z0-9-]+", " ", phrase.lower()).split())
        if p and f" {p} " in low and (best is None or len(p) > best[0]):
            best = (len(p), cls)
    return best[1] if best else None


def distinctive_phrases(class_phrases: Mapping[str, str]) -> dict[str, str]:
    """Each class's phrase without the words several classes share, for :func:`named_class`: ``"English speech"``,
    ``"French speech"`` → ``"english"``, ``"french"``; ``"kick drum"``, ``"snare drum"`` → ``"kick"``, ``"snare"``.
    A caption that says "a prompt in french" then names French speech, whatever its wording; a phrase made only
    of shared words stays whole."""
    words = {cls: " ".join(re.sub(r"[^a-z0-9-]+", " ", phrase.lower()).split()).split() for cls, phrase in
             class_phrases.items()}
    counts: dict[str, int] = {}
    for ws in words.values():
        for w in set(ws):
            counts[w] = counts.get(w, 0) + 1
    out = {}
    for cls, ws in words.items():
        own = [w for w in ws if counts[w] == 1]
        out[cls] = " ".join(own) if own else " ".join(ws)
    return out


# ---------------------------------------------------------------------------------------------- files
def read_predictions(path: str | os.PathLike) -> dict[str, str]:
    """``file_name,caption`` CSV (one caption per file; ``kikimimi caption --csv`` writes it) → name → caption.

    Raises:
        CaptionError: unreadable file, missing columns, a file named twice.
    """
    out: dict[str, str] = {}
    for row in read_caption_rows(path):
        if row.name in out:
            raise CaptionError(f"'{path}' line {row.line}: '{row.name}' is predicted twice")
        out[row.name] = row.captions[0]
    return out


def read_references(path: str | os.PathLike) -> dict[str, list[str]]:
    """``file_name,caption`` (several rows per file) or ``caption_1 … caption_K`` CSV → name → captions."""
    out: dict[str, list[str]] = {}
    for row in read_caption_rows(path):
        out.setdefault(row.name, []).extend(row.captions)
    return out


def _match(pred: dict[str, str], refs: dict[str, list[str]]) -> dict[str, str]:
    """Prediction names matched to reference names as written, else by file name without folders."""
    if set(pred) <= set(refs):
        return pred
    by_base: dict[str, list[str]] = {}
    for name in refs:
        by_base.setdefault(Path(name).name, []).append(name)
    out = {}
    for name, cap in pred.items():
        if name in refs:
            out[name] = cap
        elif len(by_base.get(Path(name).name, [])) == 1:
            out[by_base[Path(name).name][0]] = cap
        else:
            out[name] = cap  # reported as missing by caption_scores
    return out


def evaluate_captions(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                      **kw: Any) -> CaptionScores:
    """:func:`caption_scores` with prediction names matched to reference names as written, else by file name
    without folders (a prediction CSV of paths against a reference CSV of names)."""
    refs = {k: list(v) for k, v in references.items()}
    return caption_scores(_match(dict(predictions), refs), refs, **kw)


def evaluate_caption_files(pred_csv: str | os.PathLike, ref_csv: str | os.PathLike, **kw: Any) -> CaptionScores:
    """Scores of a prediction CSV against a reference CSV (:func:`caption_scores` keyword arguments)."""
    return evaluate_captions(read_predictions(pred_csv), read_references(ref_csv), **kw)


def metrics_table(rows: Mapping[str, CaptionScores], *, percent: bool = False) -> str:
    """A markdown table, one row per system (e.g. captioner, nearest neighbour), one column per metric that
    ran for any of them and the vocabulary size (distinct words of the captions, last column); unavailable
    metrics are listed under the table."""
    names = [m for m in METRIC_NAMES if any(m in s.scores for s in rows.values())]
    scale = 100.0 if percent else 1.0
    lines = ["| system | " + " | ".join([*names, "vocabulary"]) + " |", "|---|" + "---:|" * (len(names) + 1)]
    for system, s in rows.items():
        cells = [f"{scale * s.scores[m]:.3f}" if m in s.scores else "–" for m in names]
        lines.append(f"| {system} | " + " | ".join([*cells, str(s.vocabulary)]) + " |")
    gone: dict[str, list[str]] = {}  # reason → metrics
    for s in rows.values():
        for m, why in s.unavailable.items():
            if m not in names and m not in gone.setdefault(why, []):
                gone[why].append(m)
    if gone:
        lines.append("")
    for why, metrics in gone.items():
        lines.append(f"{', '.join(metrics)}: not computed — {why}.  ")
    return "\n".join(lines)
