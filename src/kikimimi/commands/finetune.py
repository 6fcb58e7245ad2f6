"""`kikimimi finetune MODEL TASK [--recipe m2d2-stage1.1] [--epochs N] [--max-minutes M] [--optimizer sgd|adamw|lars]
[--lr LR] [--training-mask R] [--out DIR]`: EVAR-style fine-tuning with a Markdown + JSON report and the fine-tuned
weights in kikimimi format. ``--recipe`` starts from a named recipe (:data:`kikimimi.evaluation.finetune.
FINETUNE_RECIPES`; M2D2 stage 1.1: docs/reference.md); the flags given win over it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kikimimi.commands._options import MODEL_NAME_HELP, add_accept_licence_argument

NAME = "finetune"
HELP = "Fine-tune a checkpoint on a task CSV / class folder (EVAR protocol); report + fine-tuned weights."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint (official file or kikimimi folder)" + MODEL_NAME_HELP)
    add_accept_licence_argument(parser)
    parser.add_argument("task", help="EVAR-style CSV (file_name,label,split|fold) or a folder of class folders")
    parser.add_argument("--out", "-o", default=None, help="output folder (default: finetune-<task>); rerun to resume")
    parser.add_argument("--recipe", choices=("m2d2-stage1.1",), default=None,
                        help="start from a named recipe; flags given win. m2d2-stage1.1: M2D2 stage 1.1 (AudioSet "
                             "fine-tuning of a stage-1 model): --dur-frames 1001, LARS lr 2.0, 70 epochs, 15 warm-up, "
                             "batch 64, mixup 0.5, masks 30/192, --training-mask 0.5 structured, no RRC")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: from the data size, about 2,000 clips seen, 10-200 epochs; "
                             "the EVAR recipes use 200)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop before an epoch that would end after M minutes, keeping the best epoch "
                             "(rerun with the same --out to continue)")
    parser.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up (default: 5)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw", "lars"), default=None, help="(default: sgd)")
    parser.add_argument("--lr", type=float, default=None,
                        help="base lr (default: 0.001; recipes: LARS 0.5, AdamW 5e-4)")
    parser.add_argument("--batch-size", type=int, default=None, help="(default: 128)")
    parser.add_argument("--weight-decay", type=float, default=None, help="default: 0 (SGD, LARS), 1e-4 (AdamW)")
    parser.add_argument("--mixup", type=float, default=None, help="Beta alpha of batch mixup (0 = off; default: 0.5)")
    parser.add_argument("--freq-mask", type=int, default=None, help="SpecAugment max mel bins (0 = off; default: 30)")
    parser.add_argument("--time-mask", type=int, default=None, help="SpecAugment max frames (0 = off; default: 100)")
    parser.add_argument("--training-mask", type=float, default=None, metavar="R",
                        help="ViT: drop this share of the input patches in training (default: 0; M2D2 stage 1.1: 0.5)")
    parser.add_argument("--training-mask-mode", choices=("structured", "random", "structured-masked"), default=None,
                        help="structured (M2D2's, default: marked rows/columns stay visible), random, or "
                             "structured-masked (marked rows/columns dropped, as described)")
    parser.add_argument("--no-rrc", action="store_true", help="disable the random resize crop")
    parser.add_argument("--lr-decay", type=float, default=1.0, help="ViT layer-wise lr decay (1 = off)")
    parser.add_argument("--freeze-embed", action="store_true", help="keep the ViT patch embedding fixed")
    parser.add_argument("--dur-frames", type=int, default=None,
                        help="ViT input length in frames, one pass (positional table resampled / truncated)")
    parser.add_argument("--unit-s", type=float, default=None, help="clip length in seconds (default: per task)")
    parser.add_argument("--no-valid", choices=("holdout", "last_epoch"), default="holdout",
                        help="selection for tasks without a validation split")
    parser.add_argument("--folds", type=int, nargs="*", default=None, help="folds to run (default: all)")
    parser.add_argument("--norm-stats", nargs=2, type=float, metavar=("MEAN", "STD"), default=None)
    parser.add_argument("--seed", type=int, default=42, help="(default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--no-amp", action="store_true", help="disable float16 autocast on CUDA")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow arbitrary pickled objects in MODEL (can run code: trusted files only)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_model_paths

    check_model_paths([args.model, args.task])  # a missing path: usage error (exit 2)
    from tqdm import tqdm

    from kikimimi.checkpoints import CheckpointError, load_encoder
    from kikimimi.commands._options import load_task, resolve_model
    from kikimimi.evaluation.finetune import FinetuneConfig, finetune_task
    from kikimimi.evaluation.finetune_report import write_finetune_report
    from kikimimi.evaluation.run import model_label
    from kikimimi.evaluation.tasks import TaskError
    from kikimimi.fileio import file_fingerprint

    try:
        given = dict(  # None = not given: the recipe's value, else FinetuneConfig's default
            lr=args.lr, optimizer=args.optimizer, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
            batch_size=args.batch_size, weight_decay=args.weight_decay, mixup=args.mixup, freq_mask=args.freq_mask,
            time_mask=args.time_mask, rrc=False if args.no_rrc else None, dur_frames=args.dur_frames,
            unit_s=args.unit_s, training_mask=args.training_mask, training_mask_mode=args.training_mask_mode)
        config = FinetuneConfig.from_recipe(
            args.recipe, **{k: v for k, v in given.items() if v is not None},
            lr_decay=args.lr_decay, freeze_embed=args.freeze_embed, no_valid=args.no_valid,
            norm_stats=tuple(args.norm_stats) if args.norm_stats else None,
            folds=tuple(args.folds) if args.folds else None, device=args.device, amp=not args.no_amp, seed=args.seed,
            max_minutes=args.max_minutes)
        task = load_task(args.task, args.unit_s)
        args.model = resolve_model(args.model, args)
        bundle = load_encoder(args.model, trust_pickle=args.trust_pickle)
    except (TaskError, CheckpointError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(f"finetune-{task.name}")
    path = Path(args.model)
    name = model_label(args.model)  # file stem, or the run folder of <run>/kikimimi
    try:
        result = finetune_task(bundle, task, config, out, progress=not args.quiet,
                               log=lambda line: tqdm.write(line, file=sys.stderr))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    skipped = list(dict.fromkeys(result.errors))  # a file of several folds is reported once
    for line in skipped:
        print(f"skipped unreadable file {line}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} unreadable file(s) skipped; fine-tuned on the others", file=sys.stderr)
    report = write_finetune_report(result, out, model_name=name, task=task,
                                   model_fingerprint=file_fingerprint(path)["sha256"])
    print(f"{task.name}: {result.metric} {100 * result.score:.1f} (selection: {result.selection})")
    print(f"wrote {report}, report.json, predictions.csv; weights in "
          + ", ".join(result.model_dirs.values()))
    return 0
