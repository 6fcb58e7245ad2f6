"""`kikimimi eval-captions PRED.csv REF.csv`: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (and SPICE / SPIDEr when SPICE
can run offline) with pycocoevalcap. PRED: ``file_name,caption`` (one per file, as `kikimimi caption --csv`
writes); REF: ``file_name,caption`` rows (several per file) or ``caption_1 … caption_K`` columns."""

from __future__ import annotations

import argparse
import json

NAME = "eval-captions"
HELP = "Score predicted captions against references (BLEU, METEOR, ROUGE-L, CIDEr-D; SPICE when available)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", help="CSV file_name,caption (one caption per file)")
    parser.add_argument("references", help="CSV file_name,caption (several rows per file) or caption_1..K")
    parser.add_argument("--baseline", help="a second prediction CSV (e.g. nearest-neighbour captions) scored too")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (its Java process is slow to start)")
    parser.add_argument("--tokenizer", choices=("auto", "ptb", "simple"), default="auto",
                        help="PTB (Java, as COCO/DCASE) or a plain word split; auto = PTB when Java is present")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_paths

    check_paths([args.predictions, args.references, *filter(None, [args.baseline])])  # missing: exit 2
    from kikimimi.evaluation.caption_metrics import evaluate_caption_files, metrics_table

    kw = {"meteor": not args.no_meteor, "tokenizer": args.tokenizer}
    rows = {"predictions": evaluate_caption_files(args.predictions, args.references, **kw)}
    if args.baseline:
        rows["baseline"] = evaluate_caption_files(args.baseline, args.references, **kw)
    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in rows.items()}, indent=2))
    else:
        first = rows["predictions"]
        print(f"{first.n} clips, tokenizer {first.tokenizer}")
        print(metrics_table(rows))
    return 0
