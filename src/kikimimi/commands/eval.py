"""`kikimimi eval MODEL… --task TASK… -o OUT`: probe report (linear and logistic) with baselines and plots.

``--captions PRED.csv REF.csv [--nn-captions NN.csv|CAPTIONER_DIR]`` adds a "Captions" section (BLEU-1..4,
METEOR, ROUGE-L, CIDEr-D; the same scores and table as `kikimimi eval-captions`) with the nearest-neighbour
captions as the baseline row.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kikimimi.commands._options import add_accept_licence_argument

NAME = "eval"
HELP = "Probe evaluation (EVAR linear + logistic) of checkpoints on task CSVs or class folders, with baselines."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", help="checkpoints (official or kikimimi), model names "
                        "(`kikimimi models list`), or 'logmel'")
    add_accept_licence_argument(parser)
    parser.add_argument("--task", nargs="+", required=True,
                        help="EVAR-style CSVs (file_name,label,split|fold) or folders with one sub-folder per class")
    parser.add_argument("-o", "--out", required=True, help="report folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="write the report also into a folder that holds another job's outputs")
    parser.add_argument("--unit-s", type=float, help="clip length in seconds (default: per task)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="probe repeats on the cached embeddings (default: %(default)s)")
    parser.add_argument("--lr", type=float,
                        help="pin the linear probe's lr (default: chosen on validation from 3e-4, 1e-3, 3e-3, 1e-2, "
                        "the same search for every model)")
    parser.add_argument("--probe", choices=("linear", "logistic", "both"), default="both",
                        help="linear: EVAR-style torch probe; logistic: scikit-learn LogisticRegression with C "
                        "chosen on validation; both (default)")
    parser.add_argument("--metric", choices=("accuracy", "uar", "wacc", "mAP"),
                        help="reported metric for every task (default: the task's: its .task.json, else UAR for "
                        "heart tasks, W.acc for murmur classes, mAP for multi-label, else accuracy)")
    parser.add_argument("--finetune", nargs="+", default=[], metavar="DIR",
                        help="`kikimimi finetune` output folders whose results join the table")
    parser.add_argument("--hidden", type=int, nargs="*", default=[], help="MLP probe hidden sizes, e.g. 512")
    parser.add_argument("--no-baselines", action="store_true", help="skip log-mel and random-init baselines")
    parser.add_argument("--no-plots", action="store_true", help="no confusion matrices or cluster maps")
    parser.add_argument("--map", choices=("tsne", "umap"), default="tsne",
                        help="cluster map method (umap needs: pip install umap-learn)")
    parser.add_argument("--norm-stats", nargs=2, type=float, metavar=("MEAN", "STD"),
                        help="fixed log-mel statistics (default: file's for M2D, per task for BYOL-A)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow arbitrary pickled objects in the checkpoints (can run code: trusted files only)")
    parser.add_argument("--captions", nargs=2, metavar=("PRED", "REF"),
                        help="add a Captions section: predicted captions (CSV file_name,caption, as `kikimimi "
                        "caption --csv` writes) scored against references (file_name,caption rows or caption_1..K)")
    parser.add_argument("--nn-captions", metavar="NN",
                        help="the baseline row of the Captions section: a CSV of nearest-neighbour captions, or a "
                        "captioner folder (its training clips' captions, nearest to each PRED file's audio)")
    parser.add_argument("--no-meteor", action="store_true",
                        help="Captions section without METEOR (its Java process is slow to start)")
    parser.add_argument("--text-encoder", metavar="SPEC",
                        help="text encoder for the zero-shot rows of CLAP models (e.g. gte:/path/to/gte-base for the "
                        "2024 release; default: the one inside or recorded beside the checkpoint)")


def caption_rows(captions: Sequence[str] | None, nn_captions: str | None, *, meteor: bool = True,
                 device: str = "cpu") -> dict[str, Any] | None:
    """The systems of the report's Captions section: ``{"captioner": scores[, "nearest neighbour": scores]}``
    (``None`` without ``captions``). ``nn_captions``: a CSV, or a captioner folder whose nearest-neighbour
    captions of the prediction files are computed here (:func:`~kikimimi.inference.captioner.
    nearest_neighbour_baseline`)."""
    if not captions:
        if nn_captions:
            raise ValueError("--nn-captions needs --captions PRED REF")
        return None
    from kikimimi.evaluation.caption_metrics import evaluate_captions, read_predictions, read_references

    pred_csv, ref_csv = captions
    preds, refs = read_predictions(pred_csv), read_references(ref_csv)
    rows = {"captioner": evaluate_captions(preds, refs, meteor=meteor)}
    if nn_captions:
        from kikimimi.inference.captioner import is_captioner_folder, nearest_neighbour_baseline

        if is_captioner_folder(nn_captions):
            names = list(preds)  # audio paths as written, else relative to the prediction CSV's folder
            paths = [n if Path(n).exists() else str(Path(pred_csv).parent / n) for n in names]
            nn = dict(zip(names, nearest_neighbour_baseline(nn_captions, paths, device=device), strict=True))
        else:
            nn = read_predictions(nn_captions)
        rows["nearest neighbour"] = evaluate_captions(nn, refs, meteor=meteor)
    return rows


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_model_paths

    check_model_paths([*args.models, *args.task])  # a missing path: usage error (exit 2)
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.commands._options import load_task, resolve_model
    from kikimimi.evaluation.run import load_finetune_rows, model_specs, run_evaluation
    from kikimimi.evaluation.tasks import TaskError

    try:
        if args.map == "umap" and not args.no_plots:
            from kikimimi.evaluation.cluster_plot import import_umap

            import_umap()
        tasks = [load_task(t, args.unit_s, args.metric) for t in args.task]
        for task in tasks:
            task.check_labels()  # before any model is loaded or any clip embedded
        models = [m if m == "logmel" else resolve_model(m, args) for m in args.models]
        from kikimimi.device import resolve_device

        args.device = str(resolve_device(args.device))  # "auto" → cuda when present, else cpu
        specs = model_specs(models, baselines=not args.no_baselines, device=args.device, lr=args.lr,
                            norm_stats=args.norm_stats, text_encoder=args.text_encoder,
                            trust_pickle=args.trust_pickle)
        finetune = load_finetune_rows(args.finetune, tasks)
    except (TaskError, CheckpointError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        captions = caption_rows(args.captions, args.nn_captions, meteor=not args.no_meteor, device=args.device)
    except (ValueError, OSError, ImportError) as exc:  # unreadable lists, unmatched names, missing extra
        print(f"error: --captions: {exc}", file=sys.stderr)
        return 2
    probes = ("linear", "logistic") if args.probe == "both" else (args.probe,)
    from kikimimi.fileio import FolderOwnedError, OutputInUseError, claim_folder, output_lock

    try:
        with output_lock(args.out, NAME):  # one job per folder; the folder is stamped as an evaluation report's
            claim_folder(args.out, NAME, {}, overwrite=args.overwrite, legacy_ok=True, what="an evaluation report")
            outcome = run_evaluation(specs, tasks, args.out, seeds=tuple(range(42, 42 + args.seeds)),
                                     hidden=args.hidden, device=args.device, plots=not args.no_plots, log=print,
                                     map_method=args.map, probes=probes, finetune=finetune, captions=captions)
    except (TaskError, ImportError, FolderOwnedError, OutputInUseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {Path(args.out) / 'report.md'}, report.json, scores.csv")
    return 0 if outcome.results else 1
