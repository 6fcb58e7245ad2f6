"""Zero-shot classification and text→audio / audio→text retrieval of CLAP models on the open suite's test side.

    python benchmarks/open_suite/eval_open_clap.py --model NAME_OR_DIR [--model …] [--suite DIR] [--out FILE.json]

The open suite's evaluation of `run_clap.py` (same functions: prompt-ensemble zero-shot of
``zeroshot_labels`` minus prompts that are training captions, whole-clip retrieval on the test captions, the chance
row), for CLAP models trained elsewhere — the shipped ``open-clap-tiny`` (issue 27) — without building the suite's
pre-training corpus: it needs only the task CSVs of a built suite (``run_suite.py`` / ``build_data.py``, stage 1).
The caption pairs are made from the task rows with the suite's own templates and seed (``captions.caption_rows``).
Writes one JSON report (atomic) with the CPU model and the command that produced it; prints a table.
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

import build_tasks as bt  # noqa: E402
import captions as cap  # noqa: E402
import clap_report as cr  # noqa: E402
from _common import cpu_model  # noqa: E402
from run_clap import chance_row, retrieval, zero_shot  # noqa: E402
from run_suite import load_tasks  # noqa: E402

from kikimimi.fileio import atomic_write_json  # noqa: E402

DEFAULT_SUITE = Path.home() / ".cache" / "kikimimi" / "open-train" / "suite" / "full"


def caption_pairs(suite: Path, seed: int = 0) -> list[dict[str, str]]:
    """The suite's caption rows (``file_name,caption,split,…``), written by its builder or made the same way."""
    made = suite / "captions.csv"
    if made.is_file():
        return cr.read_caption_rows(made)
    names = ("language_id", "drum_type", "instrument_family", "instrument_family_shifted")
    return cap.caption_rows({n: bt.read_rows(suite / f"{n}.csv") for n in names}, seed)


def evaluate(model_name: str, suite: Path, batch_size: int) -> dict:
    """Zero-shot per task and retrieval for one CLAP model (a registry name or a kikimimi folder)."""
    from kikimimi.inference.clap import load_clap

    rows = caption_pairs(suite)
    tasks = load_tasks(suite)
    train_captions = [r["caption"] for r in rows if r["split"] == "train"]
    pairs = [(suite / r["file_name"], r["caption"]) for r in rows if r["split"] == "test"]
    t = time.perf_counter()
    model = load_clap(model_name)
    out = {"model": model_name, "zero_shot": zero_shot(model, tasks, cap.ZERO_SHOT, train_captions, batch_size),
           "retrieval": retrieval(model, pairs, batch_size)}
    out["seconds"] = round(time.perf_counter() - t, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="CLAP model name or folder (repeatable)")
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="a built open suite (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="JSON report (default: SUITE/open_clap_eval.json)")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    rows = caption_pairs(args.suite)
    tasks = load_tasks(args.suite)
    report = {"suite": str(args.suite), "cpu": cpu_model(), "machine": platform.machine(),
              "command": "python benchmarks/open_suite/eval_open_clap.py " + " ".join(argv or sys.argv[1:]),
              "chance": chance_row(args.suite, rows, tasks),
              "models": [evaluate(m, args.suite, args.batch_size) for m in args.model]}
    out = args.out or args.suite / "open_clap_eval.json"
    atomic_write_json(out, report)
    names = [t.name for t in tasks]
    print("| model | " + " | ".join(f"zero-shot {n}" for n in names) + " | T→A R@10 | A→T R@10 |")
    print("|---" * (len(names) + 3) + "|")
    chance = report["chance"]
    print("| chance | " + " | ".join(f"{100 * chance['zero_shot'][n]:.1f}" for n in names)
          + f" | {100 * chance['retrieval']['text_to_audio']['R@10']:.1f}"
          + f" | {100 * chance['retrieval']['audio_to_text']['R@10']:.1f} |")
    for m in report["models"]:
        r = m["retrieval"]
        print(f"| {m['model']} | " + " | ".join(f"{100 * m['zero_shot'][n]['accuracy']:.1f}" for n in names)
              + f" | {100 * r['text_to_audio']['R@10']:.1f} | {100 * r['audio_to_text']['R@10']:.1f} |")
    print(f"wrote {out} ({report['cpu']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
