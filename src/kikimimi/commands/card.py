"""`kikimimi card MODEL_DIR [--eval REPORT.json …] [--facts FACTS.json]`: a Hub model card (README.md) whose numbers
come from `kikimimi eval` reports (:mod:`kikimimi.evaluation.model_card`)."""

from __future__ import annotations

import argparse
import sys

NAME = "card"
HELP = "Write a model folder's README.md model card (Hub metadata, results from eval reports, weight hashes)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR",
                        help="a kikimimi model folder (config.json + model.safetensors, or a captioner folder)")
    parser.add_argument("--eval", nargs="+", default=[], metavar="REPORT",
                        help="report.json files (or their folders) written by `kikimimi eval`; every number of the "
                        "card comes from them")
    parser.add_argument("--facts", metavar="FACTS.json",
                        help="JSON object: name, repo_id, license, description, tags, language, datasets "
                        "[{name, licence, url, hub_id, notes}], compute {…}, recipe, command, eval_tasks {task: CSV}")
    parser.add_argument("--report-model", metavar="NAME",
                        help="the model's row name in the reports (default: the one trained model in each report)")
    parser.add_argument("--repo-id", metavar="OWNER/NAME",
                        help="the Hub repository, for the usage and reproduce commands (hf://OWNER/NAME)")
    parser.add_argument("-o", "--out", help="output file (default: MODEL_DIR/README.md)")
    parser.add_argument("--stdout", action="store_true", help="print the card instead of writing it")


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 written; 2 (usage) for a missing folder, report or facts file, or one the card cannot use."""
    from pathlib import Path

    from kikimimi.commands._exit import DONE, UsageError, check_paths

    check_paths([args.model_dir, *args.eval, *([args.facts] if args.facts else [])])
    from kikimimi.checkpoints.errors import CheckpointError
    from kikimimi.evaluation.model_card import CardError, build_card, card_digest, read_facts
    from kikimimi.fileio import atomic_write_text

    reports = [Path(r) / "report.json" if Path(r).is_dir() else Path(r) for r in args.eval]
    try:
        facts = read_facts(args.facts) if args.facts else None
        text = build_card(args.model_dir, reports, facts=facts, report_model=args.report_model,
                          repo_id=args.repo_id)
    except (CardError, CheckpointError) as exc:
        raise UsageError(str(exc)) from None
    if args.stdout:
        sys.stdout.write(text)
        return DONE
    out = Path(args.out) if args.out else Path(args.model_dir) / "README.md"
    atomic_write_text(out, text)
    print(f"wrote {out} ({len(reports)} report(s), card sha256 {card_digest(text)[:12]})")
    return DONE
