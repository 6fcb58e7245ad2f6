"""`kikimimi eval MODEL… --task TASK… -o OUT`: linear-probe report with baselines and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "eval"
HELP = "Linear-probe evaluation (EVAR protocol) of checkpoints on task CSVs or class folders, with baselines."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", help="checkpoints (official or kikimimi), or 'logmel'")
    parser.add_argument("--task", nargs="+", required=True,
                        help="EVAR-style CSVs (file_name,label,split|fold) or folders with one sub-folder per class")
    parser.add_argument("-o", "--out", required=True, help="report folder")
    parser.add_argument("--unit-s", type=float, help="clip length in seconds (default: per task)")
    parser.add_argument("--seeds", type=int, default=3, help="probe repeats on the cached embeddings")
    parser.add_argument("--lr", type=float, help="probe lr (default: 3e-5 M2D, 3e-4 BYOL-A and baselines)")
    parser.add_argument("--hidden", type=int, nargs="*", default=[], help="MLP probe hidden sizes, e.g. 512")
    parser.add_argument("--no-baselines", action="store_true", help="skip log-mel and random-init baselines")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--map", choices=("tsne", "umap"), default="tsne",
                        help="cluster map method (umap needs: pip install umap-learn)")
    parser.add_argument("--norm-stats", nargs=2, type=float, metavar=("MEAN", "STD"),
                        help="fixed log-mel statistics (default: file's for M2D, per task for BYOL-A)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--text-encoder", metavar="SPEC",
                        help="text encoder for the zero-shot rows of CLAP models (e.g. gte:/path/to/gte-base for the "
                        "2024 release; default: the one inside or recorded beside the checkpoint)")


def run(args: argparse.Namespace) -> int:
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.commands._options import load_task
    from kikimimi.evaluation.report import model_specs, run_evaluation
    from kikimimi.evaluation.tasks import TaskError

    try:
        if args.map == "umap" and not args.no_plots:
            from kikimimi.evaluation.cluster_plot import import_umap

            import_umap()
        tasks = [load_task(t, args.unit_s) for t in args.task]
        specs = model_specs(args.models, baselines=not args.no_baselines, device=args.device, lr=args.lr,
                            norm_stats=args.norm_stats, text_encoder=args.text_encoder)
    except (TaskError, CheckpointError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outcome = run_evaluation(specs, tasks, args.out, seeds=tuple(range(42, 42 + args.seeds)), hidden=args.hidden,
                             device=args.device, plots=not args.no_plots, log=print,
                             map_method=args.map)
    print(f"wrote {Path(args.out) / 'report.md'}, report.json, scores.csv")
    return 0 if outcome.results else 1
