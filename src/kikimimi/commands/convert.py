"""``kikimimi convert SRC OUT [--to kikimimi|official] [--trust-pickle]``.

``--to kikimimi`` (default): any official file (or kikimimi folder) → folder ``OUT`` with
``model.safetensors`` + ``config.json``. ``--to official``: → an encoder-only official-layout ``.pth``
(``OUT`` ending in ``.pth``/``.pt`` is the file; otherwise ``OUT`` is a folder and the file is written to
``OUT/<official-folder-name>/weights_enconly.pth`` so that name-parsing loaders find the sizes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kikimimi.commands._options import MODEL_NAME_HELP, add_accept_licence_argument

NAME = "convert"
HELP = "Convert official NTT checkpoints to kikimimi's safetensors format (or back to the official layout)."


def _size_argument(text: str) -> tuple[int, int]:
    try:
        a, b = text.lower().split("x")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AxB (e.g. 80x608), got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="official .pth/.ckpt file or kikimimi folder" + MODEL_NAME_HELP)
    parser.add_argument("out", type=Path, help="output folder (kikimimi) or .pth file / folder (official)")
    parser.add_argument("--to", choices=("kikimimi", "official"), default="kikimimi", help="output format")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow arbitrary pickled objects in SRC (can run code: only for files you trust)",
    )
    parser.add_argument("--size", default=None, help="ViT size name to check (tiny/small/base/large)")
    parser.add_argument("--input-size", type=_size_argument, default=None, help="training input FxT, e.g. 80x608")
    parser.add_argument("--patch-size", type=_size_argument, default=None, help="patch fxt, e.g. 16x16")
    parser.add_argument("--sample-rate", type=int, default=None, help="model sample rate in Hz")
    parser.add_argument(
        "--norm-stats", type=float, nargs=2, metavar=("MEAN", "STD"), default=None, help="log-mel mean, std"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (refused by default)")
    add_accept_licence_argument(parser)


def _existing_output(args: argparse.Namespace) -> Path | None:
    """The output that ``convert`` would replace: a non-empty folder or an existing file."""
    out = Path(args.out)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        return out
    return None


def official_release(source: str | None, given: str | Path):
    """The official release (:data:`kikimimi.checkpoints.registry.OFFICIAL_MODELS` entry) that weights come
    from, or None (weights trained with kikimimi, or of unknown origin).

    ``given`` is the SRC argument (a registered name counts), ``source`` the original file the weights were read
    from (``config["source"]``, kept through a kikimimi folder): a file or folder named as a release (the zip's
    folder, the BYOL-A file name) or inside the model cache's folder of a release is that release."""
    from kikimimi.checkpoints.hub import model_dir
    from kikimimi.checkpoints.registry import OFFICIAL_MODELS, find_entry

    entry = find_entry(str(given)) if not Path(given).exists() else None
    if entry is not None and entry in OFFICIAL_MODELS:
        return entry
    for text in (source, given):
        if not text:
            continue
        path = Path(text).expanduser().absolute()
        for e in OFFICIAL_MODELS:
            release = e.file_name.removesuffix(".zip")
            if path.name == e.file_name or release in path.parts or model_dir(e).absolute() in path.parents:
                return e
    return None


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_model_paths

    check_model_paths([args.src])  # a path that does not exist: a usage error (exit 2) before anything is written
    import warnings

    from kikimimi.checkpoints import (
        LICENCE_NOTE,
        CheckpointError,
        load_encoder,
        official_folder_name,
        save_kikimimi,
        to_official_state_dict,
    )
    from kikimimi.fileio import atomic_torch_save

    existing = _existing_output(args)
    replaces = args.to == "kikimimi" or Path(args.out).suffix in (".pth", ".pt")  # an official folder only gains a file
    if existing is not None and replaces and not args.overwrite:
        print(f"error: '{existing}' exists and is not empty; choose another output or pass --overwrite",
              file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bundle = load_encoder(
                args.src,
                size=args.size,
                input_size=args.input_size,
                patch_size=args.patch_size,
                sample_rate=args.sample_rate,
                norm_stats=args.norm_stats,
                trust_pickle=args.trust_pickle,
                accept_licence=args.accept_licence,
            )
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        if args.to == "kikimimi":
            out = save_kikimimi(bundle, args.out)
        else:
            out = args.out
            if out.suffix not in (".pth", ".pt"):
                out = out / official_folder_name(bundle) / "weights_enconly.pth"
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(to_official_state_dict(bundle), out)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    extras = [k for k in ("head", "audio_proj", "text_proj") if getattr(bundle, k) is not None]
    if bundle.text_encoder_state:
        extras.append("text_encoder")
    print(f"wrote {out} ({bundle.family}, norm_stats {bundle.norm_stats.to_list()}, "
          f"extras: {', '.join(extras) or 'none'})")  # fmt: skip
    if official_release(bundle.config.get("source"), args.src) is not None:  # not for weights the user trained
        print(f"note: {LICENCE_NOTE}")
    return 0
