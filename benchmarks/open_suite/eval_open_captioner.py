"""Captions of the open suite's held-out test clips by a captioner trained elsewhere (the shipped
``open-captioner-tiny``, issue 27): class-word accuracy against the nearest-neighbour baseline and chance, plus
BLEU / METEOR / ROUGE-L / CIDEr-D against the suite's test-template references.

    python benchmarks/open_suite/eval_open_captioner.py --model NAME_OR_DIR [--nn-bank DIR] [--suite DIR]
                                                        [--out FILE.json] [--beam 3]

- test side: the suite's caption rows (``eval_open_clap.caption_pairs``: test clips of language_id, drum_type,
  instrument_family and instrument_family_shifted, captioned with *test* templates never used in training);
- class word: a caption names a clip's class when it contains one of the class's words *in the corpus's own
  vocabulary* (:data:`CLASS_WORDS`: the open corpus writes "kick", "tom", "chromatic percussion", "pipe" where the
  suite's test templates write "kick drum", "tom-tom", "mallet percussion", "flute"); the longest matching word
  wins (``caption_metrics.named_class``); no word = wrong. The same rule scores the nearest-neighbour baseline;
- nearest-neighbour baseline: the caption of the training clip closest in pooled-embedding cosine
  (``Captioner.nearest_neighbour_caption``; the bank of the training run's captioner folder, ``--nn-bank``, when
  the evaluated folder does not ship one); chance: one over the number of classes.

Writes one JSON report (atomic) with the CPU model and the command; prints a table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import cpu_model  # noqa: E402
from eval_open_clap import DEFAULT_SUITE, caption_pairs  # noqa: E402
from run_captions import labels_of  # noqa: E402

from kikimimi.fileio import atomic_write_json  # noqa: E402

#: task → class → the words that name it in the open corpus's captions (whole words, case-insensitive)
CLASS_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "language_id": {c: (c,) for c in ("english", "spanish", "french", "italian", "russian")},
    "drum_type": {
        "kick": ("kick", "bass drum"), "snare": ("snare", "rimshot", "side stick"),
        "hihat": ("hi-hat", "hihat", "hi hat", "hh", "hat"), "tom": ("tom", "tom-tom", "floor tom"),
        "cymbal": ("cymbal", "crash", "ride", "splash", "china"),
        "other": ("cowbell", "clap", "hand clap", "tambourine", "conga", "bongo", "woodblock", "shaker", "maracas",
                  "claves", "triangle", "guiro", "cabasa", "agogo", "timbale", "whistle", "percussion"),
    },
    "instrument_family": {
        "piano": ("piano",), "chromatic_percussion": ("chromatic percussion", "mallet percussion"),
        "organ": ("organ",), "guitar": ("guitar",), "bass": ("bass",), "strings": ("strings", "string"),
        "ensemble": ("ensemble", "string ensemble"), "brass": ("brass",), "reed": ("reed",),
        "pipe": ("pipe", "flute"), "synth_lead": ("synth lead",), "synth_pad": ("synth pad",),
        "ethnic": ("ethnic",), "percussive": ("percussive",),
    },
}


def named(task: str, text: str) -> str | None:
    """The class of ``task`` that ``text`` names (longest whole-word match of :data:`CLASS_WORDS`), else None."""
    from kikimimi.evaluation.caption_metrics import named_class

    phrases = {(cls, w): w for cls, words in CLASS_WORDS[task].items() for w in words}
    hit = named_class(text, phrases)
    return hit[0] if hit else None


def class_word_accuracy(texts: dict[str, str], labels: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """Per task: n, chance and the fraction of files whose text names their class."""
    out: dict[str, dict] = {}
    for task in CLASS_WORDS:
        files = [f for f in texts if labels[f][0] == task]
        if files:
            right = sum(named(task, texts[f]) == labels[f][1] for f in files)
            out[task] = {"n": len(files), "chance": 1.0 / len(CLASS_WORDS[task]), "accuracy": right / len(files)}
    return out


def test_references(suite: Path) -> dict[str, list[str]]:
    """file_name (relative to ``suite``) → its test-template reference captions, for the labelled test clips."""
    labels = labels_of(suite)
    refs: dict[str, list[str]] = {}
    for r in caption_pairs(suite):
        if r["split"] == "test" and r["file_name"] in labels:
            refs.setdefault(r["file_name"], []).append(r["caption"])
    return refs


def test_files(suite: Path, limit: int | None) -> list[str]:
    """The labelled test clips in name order (the first ``limit`` per task when given)."""
    labels = labels_of(suite)
    files = sorted(test_references(suite))
    if limit is None:
        return files
    return [f for task in CLASS_WORDS for f in [f for f in files if labels[f][0] == task][:limit]]


def evaluate(model: str, suite: Path, nn_bank: str | None, beam: int, limit: int | None = None) -> dict:
    """Captions and the nearest-neighbour baseline of every test clip; class-word accuracy and caption metrics."""
    from kikimimi.evaluation.caption_metrics import caption_scores
    from kikimimi.inference.captioner import load_captioner, nearest_neighbour_baseline

    refs = test_references(suite)
    labels = labels_of(suite)
    files = test_files(suite, limit)
    paths = [str(suite / f) for f in files]
    captioner = load_captioner(model)
    t = time.perf_counter()
    preds = dict(zip(files, captioner.caption(paths, beam_size=beam), strict=True))
    caption_s = time.perf_counter() - t
    bank = nn_bank or model
    nn = dict(zip(files, nearest_neighbour_baseline(bank, paths), strict=True))
    ours, base = class_word_accuracy(preds, labels), class_word_accuracy(nn, labels)
    per_task = {task: {"n": ours[task]["n"], "chance": ours[task]["chance"], "captioner": ours[task]["accuracy"],
                       "nearest_neighbour": base[task]["accuracy"]} for task in ours}
    examples = {task: [{"file": f, "label": labels[f][1], "caption": preds[f], "nn": nn[f], "reference": refs[f][0]}
                       for f in [f for f in files if labels[f][0] == task][:3]] for task in per_task}
    return {
        "model": model, "audio_model": captioner.config["audio_model"], "nn_bank": bank, "beam": beam,
        "n_test": len(files), "class_words": per_task,
        "metrics": {"captioner": caption_scores(preds, {f: refs[f] for f in files}).to_dict(),
                    "nearest_neighbour": caption_scores(nn, {f: refs[f] for f in files}).to_dict()},
        "caption_s": round(caption_s, 1), "examples": examples, "predictions": preds, "nn_predictions": nn,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="captioner folder or registered name")
    p.add_argument("--nn-bank", default=None, help="captioner folder whose nn_bank gives the nearest-neighbour "
                                                   "baseline (default: --model's)")
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="a built open suite (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="JSON report (default: SUITE/open_captioner_eval.json)")
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--limit", type=int, default=None, help="only the first N test clips per task (smoke runs)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    report = {"suite": str(args.suite), "cpu": cpu_model(), "machine": platform.machine(),
              "command": "python benchmarks/open_suite/eval_open_captioner.py " + " ".join(argv),
              "class_word_table": {t: {c: list(w) for c, w in cw.items()} for t, cw in CLASS_WORDS.items()},
              **evaluate(args.model, args.suite, args.nn_bank, args.beam, args.limit)}
    out = args.out or args.suite / "open_captioner_eval.json"
    atomic_write_json(out, report)
    print("| task | n | chance | captioner class word | nearest neighbour |\n|---|---:|---:|---:|---:|")
    for task, k in report["class_words"].items():
        print(f"| {task} | {k['n']} | {100 * k['chance']:.1f} | {100 * k['captioner']:.1f} | "
              f"{100 * k['nearest_neighbour']:.1f} |")
    m = report["metrics"]
    for who in ("captioner", "nearest_neighbour"):
        print(f"{who}: " + ", ".join(f"{k} {v:.3f}" for k, v in m[who]["scores"].items()))
    print(f"wrote {out} ({report['cpu']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
