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
    "pretrain",
    "eval",
    "finetune",
    "plot",
    "zeroshot",
    "retrieval",
    "index",
    "search",
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if argv is not None or len(sys.argv) > 1 else 1
    return int(args._run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
