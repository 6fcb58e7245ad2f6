"""Captioning benchmark on the open suite: captioners on M2D-CLAP and M2D2 (stage-1) encoders against the
nearest-neighbour baseline.

    python benchmarks/open_suite/run_captions.py [--small | --smoke] [--cache DIR] [--llm tiny|smollm2|DIR]
                                                 [--steps N] [--batch-size B] [--lora-rank R] [--encoders-only]

1. ``build_data.build`` (skips what exists); the train side of ``captions.csv`` (task train + valid clips, train
   templates) and the test side (unseen prompts / kits / programs, the TimGM6mb source, *test* templates);
2. the tiny ``m2d_clap`` and ``m2d2_stage1`` pre-training runs of ``run_clap.py`` (same recipes and folders;
   finished runs are reused), or the encoders given with ``--encoder NAME=PATH``;
3. per encoder, ``kikimimi train-captioner``'s library call on the train captions plus question–answer pairs
   made from the task labels ("What language is spoken?" → "English.", "What kind of drum is this?" →
   "A snare drum.", "What instrument family is playing?" → "A guitar instrument."); ``--llm tiny`` (default on
   a CPU) is a small word-level Llama trained with the mapper, ``smollm2`` the frozen SmolLM2-135M-Instruct;
4. captions of every test file (beam 3) and the nearest-neighbour baseline (caption of the closest training
   clip, cosine of pooled embeddings): BLEU-1..4, METEOR, ROUGE-L, CIDEr-D against the test references, key-word
   accuracy per task (the caption names the clip's label: the longest label phrase it contains, whole words) and
   ``ask`` accuracy;
5. ``captions_results.md`` / ``captions_results.json`` in ``<cache>/<scale>/`` with example captions (for another
   ``--llm``: ``captions_results-<llm>[-lora<R>].md`` / ``.json``).

Because test captions use templates never seen in training, n-gram metrics mostly measure the shared content
words; the key-word accuracy is the direct check.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_data  # noqa: E402
import clap_report as cr  # noqa: E402
import run_clap  # noqa: E402
from captions import DRUM_WORD, FAMILY_WORD, LANGUAGE_WORD  # noqa: E402
from run_suite import log  # noqa: E402

from kikimimi.fileio import atomic_write_json, atomic_write_text  # noqa: E402

ENCODERS = ("m2d_clap", "m2d2_stage1")
QUESTIONS = {"language_id": "What language is spoken?", "drum_type": "What kind of drum is this?",
             "instrument_family": "What instrument family is playing?"}


def key_word(task: str, label: str) -> str:
    """The content word of a label as captions write it (``"snare"`` → ``"snare drum"``)."""
    if task == "language_id":
        return LANGUAGE_WORD[label]
    if task == "drum_type":
        return DRUM_WORD[label]
    return FAMILY_WORD[label]


def answer(task: str, label: str) -> str:
    word = key_word(task, label)
    if task == "language_id":
        return f"{word}."
    art = "An" if word[0].lower() in "aeiou" else "A"
    return f"{art} {word}." if task == "drum_type" else f"{art} {word} instrument."


def labels_of(data: Path) -> dict[str, tuple[str, str]]:
    """file_name (relative to ``data``) → (task, label) for the three caption tasks."""
    out: dict[str, tuple[str, str]] = {}
    for task, csv_name in [(t, t) for t in QUESTIONS] + [("instrument_family", "instrument_family_shifted")]:
        with open(data / f"{csv_name}.csv", newline="") as f:  # shifted: the TimGM6mb test notes
            for r in csv.DictReader(f):
                out[r["file_name"]] = (task, r["label"])
    return out


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path


def write_lists(data: Path, rows: list[dict[str, str]], labels: dict[str, tuple[str, str]]) -> dict[str, Path]:
    """Train captions and QA pairs (absolute paths), test references (``file_name`` relative to ``data``)."""
    out = data / "captioning"
    out.mkdir(exist_ok=True)
    train = cr.captions_by_file(rows, "train")
    test = cr.captions_by_file(rows, "test")
    qa = [[str(data / f), QUESTIONS[labels[f][0]], answer(*labels[f])] for f in train if f in labels]
    return {
        "train": _csv(out / "train_captions.csv", ["file_name", "caption"],
                      [[str(data / f), c] for f, caps in train.items() for c in caps]),
        "qa": _csv(out / "train_qa.csv", ["file_name", "question", "answer"], qa),
        "test": _csv(out / "test_references.csv", ["file_name", "caption"],
                     [[f, c] for f, caps in test.items() for c in caps]),
    }


def encoders(data: Path, recipe: dict[str, Any], rows: list[dict[str, str]], workers: int) -> dict[str, Path]:
    """The m2d_clap and m2d2_stage1 runs of run_clap.py (trained here when missing)."""
    run_clap.TIMES = run_clap.StageTimes(data / "clap" / "timings.json")
    table = run_clap.write_train_captions(data, rows)
    corpus = run_clap.prep_train_audio(data, table, workers)
    runs: dict[str, Path] = {}
    for run in ENCODERS:
        s = run_clap.run_settings(recipe, run)
        s["captions"] = str(run_clap.caption_cache(data, table, s["text_encoder"]))
        log(f"-- encoder {run}")
        runs[run] = run_clap.pretrain(data / "clap" / "runs", run, s, corpus)
    return runs


def train_one(name: str, encoder: Path, lists: dict[str, Path], data: Path, args: argparse.Namespace) -> Path:
    from kikimimi.data.caption_qa import LABEL_QUESTIONS, read_qa_csv
    from kikimimi.data.captions import CaptionTable
    from kikimimi.models.tiny_lm import write_tiny_lm
    from kikimimi.training.captioner_run import train_captioner

    lora = f"-lora{args.lora_rank}" if args.lora_rank else ""
    run_dir = data / "captioning" / "runs" / f"{name}-{Path(args.llm).name}{lora}-{args.steps}"
    if (run_dir / "captioner" / "captioner.json").is_file():
        log(f"   {run_dir.name}: already trained")
        return run_dir / "captioner"
    settings: dict[str, Any] = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
                                "progress": False,
                                "keep_checkpoints": 1, "save_every": max(100, args.steps // 4), "log_every": 50}
    resume = any(run_dir.glob("checkpoint-*.pth"))
    if args.llm == "tiny":
        table = CaptionTable.load(lists["train"])
        texts = [c for _, caps in table.items() for c in caps]
        texts += [t for pairs in read_qa_csv(lists["qa"]).values() for qa in pairs for t in qa]
        texts += [c for row in csv.DictReader(open(lists["test"], newline="")) for c in [row["caption"]]]
        texts += list(LABEL_QUESTIONS)
        lm = run_dir / "tiny-lm"
        if not (lm / "config.json").is_file():
            write_tiny_lm(texts, lm, dim=128, layers=2, seed=args.seed)
        settings.update(lm=str(lm), train_lm=True,  # the learning rate: DEFAULT_LR of its path
                        mapper={"prefix_len": 8, "width": 128, "depth": 2, "heads": 4})
    else:
        settings.update(lm=args.llm, train_lm=False)
        if args.lora_rank:
            settings["lora"] = {"rank": args.lora_rank}
    t = time.perf_counter()
    res = train_captioner(encoder, lists["train"], run_dir, qa=lists["qa"], settings=settings, resume=resume,
                          log=lambda line: log(f"   {line}"))
    log(f"   trained {name} captioner in {time.perf_counter() - t:.0f} s")
    return res.model_dir


def evaluate(name: str, model_dir: Path, lists: dict[str, Path], data: Path,
             labels: dict[str, tuple[str, str]]) -> dict[str, Any]:
    from kikimimi.evaluation.caption_metrics import caption_scores, named_class, read_references
    from kikimimi.inference.captioner import load_captioner

    out = model_dir / "eval.json"
    if out.is_file():
        return json.loads(out.read_text())
    refs = read_references(lists["test"])
    files = sorted(refs)
    captioner = load_captioner(model_dir)
    t = time.perf_counter()
    preds = captioner.caption([str(data / f) for f in files], beam_size=3)
    nn = captioner.nearest_neighbour_caption([str(data / f) for f in files])
    answers = [captioner.ask(str(data / f), QUESTIONS[labels[f][0]], beam_size=1) for f in files]
    gen_s = time.perf_counter() - t
    ours = caption_scores(dict(zip(files, preds, strict=True)), refs)
    base = caption_scores(dict(zip(files, nn, strict=True)), refs)
    per_task: dict[str, dict[str, float]] = {}
    for task in QUESTIONS:
        idx = [i for i, f in enumerate(files) if labels[f][0] == task]
        if not idx:
            continue
        classes = sorted({lab for t_, lab in labels.values() if t_ == task})
        phrases = {c: key_word(task, c) for c in classes}
        truth = [labels[files[i]][1] for i in idx]

        def acc(texts: list[str], truth: list[str] = truth, idx: list[int] = idx,
                phrases: dict[str, str] = phrases) -> float:
            return sum(named_class(texts[i], phrases) == t for t, i in zip(truth, idx, strict=True)) / len(idx)

        per_task[task] = {"n": len(idx), "chance": 1.0 / len(classes), "captioner": acc(preds),
                          "nearest_neighbour": acc(nn), "ask": acc(answers)}
    examples = {task: [{"file": files[i], "label": labels[files[i]][1], "caption": preds[i], "nn": nn[i],
                        "question": QUESTIONS[task], "answer": answers[i], "references": refs[files[i]]}
                       for i in [j for j, f in enumerate(files) if labels[f][0] == task][:3]]
                for task in QUESTIONS}
    result = {"encoder": name, "audio_model": captioner.config["audio_model"], "model": str(model_dir),
              "n_test": len(files), "captioner": ours.to_dict(),
              "nearest_neighbour": base.to_dict(), "key_words": per_task, "examples": examples,
              "generation_s": gen_s, "predictions": dict(zip(files, preds, strict=True)),
              "nn_predictions": dict(zip(files, nn, strict=True)), "answers": dict(zip(files, answers, strict=True))}
    atomic_write_json(out, result)
    return result


def write_results(data: Path, results: list[dict[str, Any]], args: argparse.Namespace) -> Path:
    from kikimimi.evaluation.caption_metrics import CaptionScores, metrics_table

    lines = [f"# Open suite captioning ({args.scale})", "",
             f"Captioners (frozen audio encoder → mapper → `{args.llm}` LM"
             + (f" with rank-{args.lora_rank} LoRA adapters" if args.lora_rank else "")
             + f", {args.steps} steps of batch {args.batch_size}) trained on the train "
             "side of captions.csv; scored on every test file against its test-template references. Baseline: "
             "caption of the nearest training clip (cosine, pooled embeddings).", "",
             "Encoders: " + ", ".join(f"`{r['encoder']}` = {r['audio_model']}" for r in results), ""]
    for r in results:
        rows = {"captioner": CaptionScores(**r["captioner"]),
                "nearest neighbour": CaptionScores(**r["nearest_neighbour"])}
        lines += [f"## {r['encoder']} ({r['n_test']} test files)", "", metrics_table(rows), "",
                  "| task | chance | captioner key word | nearest neighbour | ask |", "|---|---:|---:|---:|---:|"]
        for task, k in r["key_words"].items():
            lines.append(f"| {task} (n={k['n']}) | {100 * k['chance']:.1f} % | {100 * k['captioner']:.1f} % | "
                         f"{100 * k['nearest_neighbour']:.1f} % | {100 * k['ask']:.1f} % |")
        lines += ["", "| task | file (label) | caption | nearest neighbour | answer | a reference |",
                  "|---|---|---|---|---|---|"]
        for task, exs in r["examples"].items():
            for e in exs:
                lines.append(f"| {task} | {Path(e['file']).name} ({e['label']}) | {e['caption']} | {e['nn']} | "
                             f"{e['answer']} | {e['references'][0]} |")
        lines.append("")
    # the tiny-LM table keeps the plain name; other language models get their own files
    name = "captions_results" + ("" if args.llm == "tiny" else f"-{Path(args.llm).name}"
                                 + (f"-lora{args.lora_rank}" if args.lora_rank else ""))
    out = data / f"{name}.md"
    atomic_write_text(out, "\n".join(lines))
    atomic_write_json(data / f"{name}.json", {"scale": args.scale, "llm": args.llm, "steps": args.steps,
                                              "batch_size": args.batch_size, "lora_rank": args.lora_rank,
                                              "results": results})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    build_data.add_arguments(p)
    p.add_argument("--recipes", type=Path, default=HERE / "recipes.json", help="encoders: the 'clap' section")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--llm", default="tiny", help="tiny (trained with the mapper), smollm2 or a local LM folder")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32, help="captioner training batch")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="LoRA adapters of this rank on a frozen --llm (not tiny; needs kikimimi[lora])")
    p.add_argument("--encoders-only", action="store_true", help="stop after the encoder pre-training runs")
    p.add_argument("--encoder", action="append", default=[], metavar="NAME=PATH",
                   help="use this audio encoder (any kikimimi.load path or run folder) instead of training the "
                   "run_clap.py encoders; repeatable")
    args = p.parse_args(argv)
    recipe = run_clap.load_clap_recipe(args.recipes, args.scale)
    data = build_data.build(args)
    (data / "clap").mkdir(exist_ok=True)
    rows = cr.read_caption_rows(data / "captions.csv")
    cr.check_sides(rows, str(data / "captions.csv"))
    labels = labels_of(data)
    log("== captioning 1. encoders")
    if args.encoder:
        runs = dict(e.split("=", 1) for e in args.encoder)
        runs = {k: Path(v) for k, v in runs.items()}
    else:
        runs = encoders(data, recipe, rows, args.workers)
    if args.encoders_only:
        return 0
    lists = write_lists(data, rows, labels)
    results = []
    for name, run_dir in runs.items():
        log(f"== captioning 2. {name}: train")
        model = train_one(name, run_dir, lists, data, args)
        log(f"== captioning 3. {name}: evaluate")
        results.append(evaluate(name, model, lists, data, labels))
    out = write_results(data, results, args)
    log(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
