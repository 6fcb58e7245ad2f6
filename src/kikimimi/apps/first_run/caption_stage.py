"""The captioning stage of ``kikimimi demo``: a tiny captioner captions held-out generated clips and answers a
question about one of them.

:func:`run_caption_stage` reads the demo's ``labels.csv`` (``file_name,label,split``), writes label captions
(:data:`CAPTION_TEMPLATES`) and label question–answer pairs for the ``train`` clips, builds a tiny word-level
language model (:mod:`kikimimi.models.tiny_lm`), trains it with the mapper on the frozen frame
features of the given audio encoder (:func:`kikimimi.training.captioner_run.train_captioner`), captions the
``test`` clips (never trained on) and scores them against label captions, next to the nearest-neighbour
baseline. Everything it writes is under ``out_dir``.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from kikimimi.data.caption_qa import LABEL_QUESTIONS, label_answer
from kikimimi.evaluation.caption_metrics import caption_scores, distinctive_phrases, metrics_table, named_class
from kikimimi.fileio import atomic_write_json, atomic_write_text, csv_text
from kikimimi.inference.captioner import load_captioner
from kikimimi.models.tiny_lm import write_tiny_lm
from kikimimi.training.captioner_run import train_captioner

__all__ = ["CAPTION_TEMPLATES", "CaptionStageError", "run_caption_stage"]

#: the caption templates of the demo ({w} = the class name with spaces)
CAPTION_TEMPLATES = ("the sound of {a} {w}.", "{A} {w} sound.", "someone recorded {a} {w}.")


class CaptionStageError(RuntimeError):
    """A step of the captioning stage failed; the message names the step."""


@contextmanager
def _step(name: str):
    try:
        yield
    except CaptionStageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the stage reports which step failed, with the cause
        raise CaptionStageError(f"captioning stage, step '{name}' failed: {type(exc).__name__}: {exc}") from exc


@contextmanager
def _threads(n: int):
    """Run with ``n`` torch threads (the tiny model's operations are too small to gain from more; on a busy
    CPU extra threads only wait for each other); the previous number is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _words(label: str) -> str:
    return str(label).replace("_", " ").strip()


def _caption(template: str, label: str) -> str:
    """A template filled with the label's words and their indefinite article."""
    w = _words(label)
    a = "an" if w[:1].lower() in "aeiou" else "a"
    return template.format(w=w, a=a, A=a.capitalize())


def _read_labels(labels_csv: Path) -> list[dict[str, str]]:
    with open(labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file_name", "label", "split"} <= set(rows[0]):
        raise ValueError(f"'{labels_csv}': expected columns file_name,label,split")
    return rows


def _pick_test(rows: Sequence[dict[str, str]], limit: int) -> list[dict[str, str]]:
    """Up to ``limit`` test rows, taken round-robin over the classes (file order within a class)."""
    by_class: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r)
    out: list[dict[str, str]] = []
    while len(out) < limit and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(out) < limit:
                out.append(by_class[label].pop(0))
    return out


def run_caption_stage(
    out_dir: str | os.PathLike,
    audio_model: str | os.PathLike,
    labels_csv: str | os.PathLike,
    *,
    steps: int = 200,
    seed: int = 0,
    llm: str = "tiny",
    max_test_clips: int = 24,
    question: str = LABEL_QUESTIONS[0],
    shipped_captioner: str | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train a tiny captioner on the demo's training clips, caption held-out clips, answer one question.

    Args:
        out_dir: everything is written here (``train_captions.csv``, ``train_qa.csv``, ``tiny-lm/``, ``run/``
            with ``run/captioner``, ``predictions.csv``, ``caption_stage.json``, ``caption_stage.md``).
        audio_model: any encoder :func:`kikimimi.inference.encoder.load` reads, or a pre-training run folder
            (its ``kikimimi`` export, else its newest checkpoint).
        labels_csv: ``file_name,label,split`` (paths relative to its folder); ``train`` trains, ``test`` is
            captioned.
        steps: training steps. llm: ``"tiny"`` (built here and trained with the mapper) or a language-model
            spec (``smollm2``, a folder; frozen — much slower on a CPU).
        max_test_clips: held-out clips captioned (round-robin over classes). question: asked about one clip.
        shipped_captioner: a captioner kikimimi ships (e.g. ``open-captioner-tiny``, trained on the open corpus,
            never on these clips) that captions the same held-out clips as it is, scored by the same rule.
        log: one line per step; ``None`` = quiet.

    Returns: the dict documented in the demo's integration notes (``markdown``, ``model_dir``, ``run_dir``,
        ``n_train``, ``n_test``, ``class_word_accuracy``, ``nn_class_word_accuracy``, ``chance``, ``metrics``,
        ``nn_metrics``, ``examples``, ``question``, ``answer``, ``answer_file``, ``answer_label``, ``seconds``).

    Raises:
        CaptionStageError: naming the step that failed.
    """
    log = log or (lambda _line: None)
    t0 = time.perf_counter()
    out = Path(out_dir)
    labels_csv = Path(labels_csv)
    with _step("read the labels and write the training captions"):
        out.mkdir(parents=True, exist_ok=True)
        rows = _read_labels(labels_csv)
        base = labels_csv.resolve().parent
        train = [r for r in rows if r["split"] == "train"]
        test = _pick_test([r for r in rows if r["split"] == "test"], int(max_test_clips))
        if not train or not test:
            raise ValueError(f"'{labels_csv}': needs train and test clips (got {len(train)} and {len(test)})")
        classes = sorted({r["label"] for r in rows})
        cap_rows = [(str(base / r["file_name"]), _caption(t, r["label"]))
                    for r in train for t in CAPTION_TEMPLATES]
        qa_rows = [(str(base / r["file_name"]), q, label_answer(r["label"])) for r in train for q in LABEL_QUESTIONS]
        atomic_write_text(out / "train_captions.csv", csv_text(["file_name", "caption"], cap_rows))
        atomic_write_text(out / "train_qa.csv", csv_text(["file_name", "question", "answer"], qa_rows))
    log(f"   {len(cap_rows)} captions and {len(qa_rows)} question-answer pairs for {len(train)} training clips "
        f"({len(classes)} classes)")
    with _threads(1):
        settings: dict[str, Any] = {"steps": int(steps), "batch_size": 32, "seed": int(seed), "progress": False,
                                    "device": "cpu", "keep_checkpoints": 1}
        if llm == "tiny":
            with _step("build the tiny language model"):
                texts = [c for _, c in cap_rows] + [a for *_, a in qa_rows] + list(LABEL_QUESTIONS) + [question]
                lm_dir = write_tiny_lm(texts, out / "tiny-lm", seed=seed)
            settings.update(lm=str(lm_dir), train_lm=True,  # the learning rate: DEFAULT_LR of its path
                            mapper={"prefix_len": 4, "width": 128, "depth": 2, "heads": 4})
        else:
            settings.update(lm=llm, train_lm=False)
        with _step(f"train the captioner ({steps} steps)"):
            run_dir = out / "run"
            trained = train_captioner(audio_model, out / "train_captions.csv", run_dir, qa=out / "train_qa.csv",
                                      settings=settings, log=lambda line: log(f"   {line}"))
        with _step("caption the held-out clips"):
            captioner = load_captioner(trained.model_dir)
            files = [str(base / r["file_name"]) for r in test]
            preds = captioner.caption(files)
            nn_preds = captioner.nearest_neighbour_caption(files)
        with _step(f"ask {question!r}"):
            answer = captioner.ask(files[0], question)
        shipped_preds: list[str] = []
        if shipped_captioner:
            with _step(f"caption the held-out clips with {shipped_captioner}"):
                shipped_preds = load_captioner(shipped_captioner).caption(files)
    with _step("score the captions"):
        refs = {r["file_name"]: [_caption(t, r["label"]) for t in CAPTION_TEMPLATES] for r in test}
        keys = [r["file_name"] for r in test]
        ours = caption_scores(dict(zip(keys, preds, strict=True)), refs, meteor=False)
        nn = caption_scores(dict(zip(keys, nn_preds, strict=True)), refs, meteor=False)
        for scores in (ours, nn):
            scores.unavailable["METEOR"] = ("left out of the demo (its Java process takes long to start); "
                                            "`kikimimi eval-captions` computes it")

        phrases = {c: _words(c) for c in classes}
        own_words = distinctive_phrases(phrases)  # "french", "kick": another captioner's wording counts too

        def hit(text: str, label: str) -> bool:  # the caption names this class (longest phrase wins)
            return (named_class(text, phrases) or named_class(text, own_words)) == label

        acc = sum(hit(p, r["label"]) for p, r in zip(preds, test, strict=True)) / len(test)
        nn_acc = sum(hit(p, r["label"]) for p, r in zip(nn_preds, test, strict=True)) / len(test)
        shipped_acc = (sum(hit(p, r["label"]) for p, r in zip(shipped_preds, test, strict=True)) / len(test)
                       if shipped_preds else None)
        examples = [{"file": r["file_name"], "label": r["label"], "caption": p, "nn_caption": q}
                    for r, p, q in zip(test, preds, nn_preds, strict=True)]
        atomic_write_text(out / "predictions.csv",
                          csv_text(["file_name", "caption"], list(zip(keys, preds, strict=True))))
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {
        "model_dir": str(trained.model_dir), "run_dir": str(trained.run_dir), "n_train": len(train),
        "n_test": len(test), "class_word_accuracy": acc, "nn_class_word_accuracy": nn_acc,
        "chance": 1.0 / len(classes), "metrics": ours.scores, "nn_metrics": nn.scores,
        "unavailable_metrics": {**ours.unavailable}, "examples": examples, "question": question,
        "answer": answer, "answer_file": test[0]["file_name"], "answer_label": test[0]["label"],
        "steps": int(steps), "llm": llm, "seconds": seconds,
        "shipped_captioner": shipped_captioner if shipped_preds else None, "shipped_class_word_accuracy": shipped_acc,
        "shipped_examples": [{"file": r["file_name"], "label": r["label"], "caption": p}
                             for r, p in zip(test, shipped_preds, strict=True)] if shipped_preds else [],
    }  # fmt: skip
    result["markdown"] = _markdown(result, ours, nn)
    atomic_write_json(out / "caption_stage.json", result)
    atomic_write_text(out / "caption_stage.md", result["markdown"])
    log(f"   class word right in {100 * acc:.0f} % of {len(test)} held-out captions (nearest neighbour "
        f"{100 * nn_acc:.0f} %, chance {100 / len(classes):.1f} %)")
    for e in examples[:3]:
        log(f"   {e['file']} ({e['label']}): \"{e['caption']}\"")
    log(f"   Q: {question}  ({test[0]['file_name']}, class {test[0]['label']})  A: {answer}")
    if shipped_acc is not None:
        log(f"   {shipped_captioner} as shipped: class word right in {100 * shipped_acc:.0f} % of the same clips")
    return result


def _markdown(r: dict[str, Any], ours: Any, nn: Any) -> str:
    lm = ("a tiny word-level Llama (random start, trained with the mapper)" if r["llm"] == "tiny"
          else f"the frozen language model `{r['llm']}`")
    lines = [
        "## Captioning (audio → words)", "",
        f"A captioner — the frozen audio encoder's frame features → a 2-layer mapper (4 prefix vectors) → {lm} — "
        f"trained for {r['steps']} steps on the {r['n_train']} training clips with 3 label captions each "
        f"({', '.join(repr(t) for t in CAPTION_TEMPLATES)}) and 2 question–answer pairs. It captions "
        f"{r['n_test']} held-out test clips it never saw; references are the same label captions. The baseline "
        "writes the caption of the nearest training clip (cosine of pooled audio embeddings). "
        f"Stage time {r['seconds']:.0f} s.", "",
        f"The caption names the clip's class (the longest class name it contains, else the class's own words: "
        f"\"french\" for French speech, \"kick\" for kick drum) in "
        f"{100 * r['class_word_accuracy']:.0f} % of the held-out clips (nearest neighbour "
        f"{100 * r['nn_class_word_accuracy']:.0f} %, chance {100 * r['chance']:.1f} %).", "",
        metrics_table({"captioner": ours, "nearest neighbour": nn}), "",
        "| clip | class | caption | nearest-neighbour caption |", "|---|---|---|---|",
    ]  # fmt: skip
    for e in r["examples"][:5]:
        lines.append(f"| {e['file']} | {e['label']} | {e['caption']} | {e['nn_caption']} |")
    lines += ["", f"Question about `{r['answer_file']}` (class `{r['answer_label']}`): *{r['question']}* → "
              f"**{r['answer']}**", ""]
    if r.get("shipped_class_word_accuracy") is not None:
        lines += [f"kikimimi's shipped captioner `{r['shipped_captioner']}` (trained on the open corpus's metadata "
                  "captions, never on these clips or these caption templates), as it is: the class word in "
                  f"{100 * r['shipped_class_word_accuracy']:.0f} % of the same held-out clips.", "",
                  "| clip | class | shipped captioner |", "|---|---|---|"]
        lines += [f"| {e['file']} | {e['label']} | {e['caption']} |" for e in r["shipped_examples"][:5]]
        lines.append("")
    return "\n".join(lines)
