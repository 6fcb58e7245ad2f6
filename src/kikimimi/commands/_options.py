"""Flags and helpers shared by several sub-commands (not a sub-command itself: no ``NAME``/``run``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_clap_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the CLAP commands (text encoder, device, pickles)."""
    parser.add_argument("--text-encoder",
                        help="text encoder spec (e.g. gte:/path/to/gte-base for M2D-CLAP 2024; default: the one "
                             "inside the checkpoint or recorded in its config.json)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trust-pickle", action="store_true", help="allow arbitrary pickles (trusted files only)")
    add_accept_licence_argument(parser)
    add_precision_argument(parser)


def add_results_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out FILE.jsonl`` (resumable per-file results) and ``--overwrite``."""
    parser.add_argument("--out", metavar="FILE.jsonl",
                        help="also write one JSON line per file here; a rerun after an interruption skips the "
                             "files already written")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out when it holds results of other settings")


def open_results_log(args: argparse.Namespace, command: str, settings: dict, about: dict | None = None):
    """The opened results file of ``--out`` (:class:`kikimimi.inference.results_log.ResultsLog`; raises its
    errors), or a stand-in that discards. ``about``: recorded in its header, not compared (the model as named)."""
    from kikimimi.inference.results_log import DiscardedResults, ResultsLog

    if not args.out:
        return DiscardedResults()
    log = ResultsLog(args.out, command, settings, overwrite=args.overwrite, about=about).open()
    if log.done:
        import sys

        print(f"resuming: {len(log.done):,} files already in '{args.out}'", file=sys.stderr)
    return log


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision auto|fp32|bf16|int8`` of the audio encoder (:mod:`kikimimi.inference.cpu_paths`,
    :mod:`kikimimi.inference.precision`); unset = ``$KIKIMIMI_PRECISION`` or ``auto``."""
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default=None,
                        help="audio encoder arithmetic: auto (default; on a CPU the fastest path measured to keep "
                             "cosine >= 0.999 to fp32 for this model, measured once and cached, `-v` says which), "
                             "fp32 (exact), bf16 (autocast; GPUs and CPUs with native bfloat16) or int8 (dynamic "
                             "quantisation of the Linear layers; CPU). $KIKIMIMI_PRECISION replaces the default")


def index_precision(args: argparse.Namespace, index_dir: str | Path) -> str | None:
    """``--precision`` when given, else the precision recorded in the search index at ``index_dir`` (its vectors'
    embedding space), else ``None`` (the default): adding to or searching an index keeps its arithmetic."""
    import json

    from kikimimi.inference.search import MANIFEST

    if getattr(args, "precision", None):
        return args.precision
    try:
        identity = json.loads((Path(index_dir) / MANIFEST).read_text(encoding="utf-8")).get("model_identity")
    except (OSError, ValueError, AttributeError):
        return None
    return identity.get("precision") if isinstance(identity, dict) else None


#: Appended to the help of model arguments: they accept registered names too.
MODEL_NAME_HELP = " or a model name (`kikimimi models list`; downloaded, verified and cached on first use)"


def add_accept_licence_argument(parser: argparse.ArgumentParser) -> None:
    """``--accept-licence``: accept an official model's licence on its first download by name."""
    parser.add_argument("--accept-licence", action="store_true",
                        help="accept the licence of an official model given by name on its first download "
                             "(also KIKIMIMI_ACCEPT_LICENCE=1); `kikimimi models info NAME` shows it")


def model_or_packaged(value: str | None, kind: str = "clap", flag: str = "-m") -> str | None:
    """``value`` (the user's ``-m``, or ``flag``), else kikimimi's packaged model of ``kind`` (``"clap"``,
    ``"captioner"``, ``"encoder"``) with one line on stderr saying so; ``None`` when neither is there."""
    if value:
        return value
    from kikimimi.checkpoints.registry import default_packaged_model

    name = default_packaged_model(kind)
    if name:
        print(f"no {flag} given: using kikimimi's packaged open model '{name}' (Apache-2.0, no download; "
              f"`kikimimi models info {name}`)", file=sys.stderr)
    return name


def names_captioner(value: str) -> bool:
    """``value`` is a captioner folder (``captioner.json``), the name of a registered captioner
    (``open-captioner-tiny``) or an ``hf://`` repository; `caption` and `ask` read their first positional
    argument with it."""
    from kikimimi.checkpoints.registry import find_entry

    if value.startswith("hf://"):  # a Hub repository is never an audio file: load_captioner reads it
        return True
    path = Path(value)
    if path.exists():
        return (path / "captioner.json").is_file()
    entry = find_entry(value)
    return entry is not None and entry.head == "captioner"


def resolve_model(value: str, args: argparse.Namespace) -> str:
    """A model argument (path or registered name) as a local path, fetching a name; paths pass unchanged."""
    from kikimimi.checkpoints import resolve_model_source

    return str(resolve_model_source(value, accept_licence=getattr(args, "accept_licence", False)))


def load_task(spec: str, unit_s: float | None, metric: str | None = None):
    """An evaluation task from an EVAR-style CSV or a folder with one sub-folder per class (``metric``: the
    reported metric, default the task's own)."""
    from kikimimi.evaluation.tasks import Task

    path = Path(spec)
    if path.is_dir():
        return Task.from_folder(path, unit_s=unit_s, metric=metric)
    return Task.from_csv(path, unit_s=unit_s, metric=metric)


def print_missing(files, missing) -> None:
    """Name the ``missing`` ones of ``files`` on stderr, at most 20 then "… and N more"."""
    import sys

    from kikimimi.fileio import summarise_names

    print(f"error: {len(missing):,} input files do not exist:", file=sys.stderr)
    for line in summarise_names([p for p in files if p in missing]):
        print(f"  {line}", file=sys.stderr)


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """`kikimimi caption`: the decoding settings (the captioner is its ``[MODEL]`` positional or ``-m``)."""
    parser.add_argument("--beam", type=int, help="beam size (1 = greedy; default: the model's, 3)")
    parser.add_argument("--max-tokens", type=int, help="most new tokens per answer (default: the model's, 30)")
    parser.add_argument("--window-s", type=float, help="window for long files (default: the training clip length)")
    parser.add_argument("--audio-model", help="audio encoder to use instead of the one the captioner names")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print JSON (files, windows with timestamps, errors)")
