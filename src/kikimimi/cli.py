"""The `kikimimi` command: one entry point, one module per sub-command in `kikimimi.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily so `kikimimi --help` stays fast and a missing optional extra only
affects the command that needs it. Only the modules of :data:`COMMAND_MODULES` are commands;
``kikimimi.commands._options`` holds flags and helpers that several of them share.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Order here is the order shown in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "info",
    "prep",
    "embed",
    "tag",
    "convert",
    "export",
    "models",
    "pretrain",
    "eval",
    "finetune",
    "plot",
    "zeroshot",
    "retrieval",
    "index",
    "search",
    "serve",
    "train_captioner",
    "caption",
    "ask",
    "eval_captions",
)


def _load_command(module_name: str):
    try:
        return importlib.import_module(f"kikimimi.commands.{module_name}")
    except ModuleNotFoundError as exc:  # command not implemented yet or optional extra missing
        if exc.name and exc.name.startswith("kikimimi.commands"):
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    from kikimimi import __version__

    parser = argparse.ArgumentParser(
        prog="kikimimi",
        description="Audio representations: log-mel front ends, BYOL-A and M2D encoders, "
        "pre-training, evaluation and audio-language models.",
    )
    parser.add_argument("--version", action="version", version=f"kikimimi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = _load_command(module_name)
        if module is None:
            continue
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; its errors propagate (see :func:`console_main`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if argv is not None or len(sys.argv) > 1 else 1
    return int(args._run(args) or 0)


#: exit status of a command stopped by bad input (the commands' own convention); 130 after Ctrl-C
INPUT_ERROR_EXIT = 2
#: set to 1 to see the traceback of an input error too
TRACEBACK_ENV = "KIKIMIMI_TRACEBACK"
#: top-level module of an optional dependency → the kikimimi extra that installs it (pyproject.toml)
EXTRA_OF_MODULE = {"sklearn": "eval", "matplotlib": "eval", "transformers": "text", "sentence_transformers": "text",
                   "gguf": "text", "accelerate": "text", "umap": "umap", "onnx": "onnx", "onnxruntime": "onnx",
                   "fastapi": "serve", "uvicorn": "serve", "faiss": "serve", "python_multipart": "serve",
                   "multipart": "serve", "pycocoevalcap": "caption", "tokenizers": "caption"}


def console_main(argv: Sequence[str] | None = None) -> int:
    """The ``kikimimi`` program (console script, ``python -m kikimimi``): :func:`main`, with an input error
    (bad file, bad setting, missing file, unavailable device) reported as one line naming the command, instead
    of a traceback. Other exceptions are bugs and keep their traceback."""
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "kikimimi")
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"kikimimi {command}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:  # an optional extra that is not installed
        extra = EXTRA_OF_MODULE.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"kikimimi {command}: error: this needs the optional package '{err.name}': "
              f'pip install "kikimimi[{extra}]"', file=sys.stderr)
        return INPUT_ERROR_EXIT
    except BrokenPipeError:  # `kikimimi info … | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush goes nowhere
        return 0
    except (ValueError, OSError, RuntimeError) as err:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print(f"kikimimi {command}: error: {err}", file=sys.stderr)
        return INPUT_ERROR_EXIT


if __name__ == "__main__":
    raise SystemExit(console_main())
