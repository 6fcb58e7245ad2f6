"""The `kikimimi` command: one entry point, one module per sub-command in `kikimimi.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily so `kikimimi --help` stays fast and a missing optional extra only
affects the command that needs it. Only the modules of :data:`COMMAND_MODULES` are commands;
``kikimimi.commands._options`` holds flags and helpers that several of them share, ``kikimimi.commands._exit``
the one exit-code rule (0 done, 1 nothing could be done, 2 usage error) and its usage checks. Command modules
import nothing heavy at their top, so building the parser (``--help``) stays fast (tests/commands/test_cli_speed.py).
``-v``/``--verbose`` (global, before or after the sub-command) also shows other libraries' warnings.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

# Order here is the order shown in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "info",
    "prep",
    "data",
    "embed",
    "tag",
    "convert",
    "export",
    "card",
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
    "evidence",
    "chat",
    "describe",
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
    _add_verbose_argument(parser, 0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(**{SUBPARSERS: {}})
    for module_name in COMMAND_MODULES:
        module = _load_command(module_name)
        if module is None:
            continue
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        _add_verbose_argument(p, argparse.SUPPRESS)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
        parser.get_default(SUBPARSERS)[module.NAME] = p
    return parser


#: the top-level parser's default holding ``{command: its sub-parser}``, so that a sub-command's usage error
#: shows that sub-command's usage line
SUBPARSERS = "_subparsers"


def _add_verbose_argument(parser: argparse.ArgumentParser, default) -> None:
    """``-v/--verbose``, before or after the sub-command (a sub-command's default is SUPPRESS, so that it does not
    reset a count given before the sub-command)."""
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="also show library warnings and details (-vv: debug messages)")


#: ``set_defaults(**{MORE_POSITIONALS: "dest"})`` in a sub-command: positional arguments given after its options
#: (``CMD MODEL --labels x a.wav``, or after ``--``) join the list positional ``dest``, which argparse cannot split
MORE_POSITIONALS = "_more_positionals"


def _more_positionals(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]):
    """``args`` with ``extras`` appended to the sub-command's list positional (see :data:`MORE_POSITIONALS`); an
    option-like string before a ``--`` (an unknown flag) is the usual argparse error (exit 2)."""
    dest = getattr(args, MORE_POSITIONALS, None)
    before = extras[: extras.index("--")] if "--" in extras else extras
    if dest is None or any(e.startswith("-") for e in before):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    getattr(args, dest).extend(e for i, e in enumerate(extras) if not (e == "--" and i == len(before)))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command. A usage error (:class:`kikimimi.commands._exit.UsageError`) is
    printed as one line and returns 2; other errors propagate (see :func:`console_main`)."""
    from kikimimi.commands._exit import USAGE, UsageError

    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        args = _more_positionals(parser.get_default(SUBPARSERS).get(args.command, parser), args, extras)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if argv is not None or len(sys.argv) > 1 else 1
    try:
        return int(args._run(args) or 0)
    except UsageError as err:  # the commands' usage errors (missing path, empty input): one line, exit 2
        print(f"kikimimi {args.command}: error: {err}", file=sys.stderr)
        return USAGE


#: exit status of a command stopped by bad input (the commands' own convention); 130 after Ctrl-C
INPUT_ERROR_EXIT = 2
#: set to 1 to see the traceback of an input error too
TRACEBACK_ENV = "KIKIMIMI_TRACEBACK"
#: top-level module of an optional dependency → the kikimimi extra that installs it (pyproject.toml)
EXTRA_OF_MODULE = {"sklearn": "eval", "matplotlib": "eval", "transformers": "text", "sentence_transformers": "text",
                   "gguf": "text", "accelerate": "text", "umap": "umap", "onnx": "onnx", "onnxruntime": "onnx",
                   "fastapi": "serve", "uvicorn": "serve", "faiss": "serve", "python_multipart": "serve",
                   "multipart": "serve", "pycocoevalcap": "caption", "tokenizers": "caption"}


class _ConsoleHandler(logging.Handler):
    """Log records as one line on the current ``sys.stderr`` (looked up per record, so a replaced stderr is
    followed): kikimimi's own records from WARNING up (INFO with ``-v``), other libraries' from ERROR up
    (WARNING and INFO with ``-v``, everything with ``-vv``)."""

    def __init__(self, command: str, verbosity: int) -> None:
        super().__init__(logging.DEBUG)
        self.command, self.verbosity = command, verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == "kikimimi" or record.name.startswith("kikimimi.")
        floor = {0: logging.WARNING if own else logging.ERROR, 1: logging.INFO}.get(self.verbosity, logging.DEBUG)
        return record.levelno >= floor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())  # one line, whatever the library wrote
            own = record.name == "kikimimi" or record.name.startswith("kikimimi.")
            level = record.levelname.lower()
            origin = record.name.removeprefix("py.warnings.").split(".")[0]
            prefix = f"kikimimi {self.command}: " if own else f"{origin}: "
            head = "" if record.levelno == logging.INFO else f"{level}: "
            print(f"{prefix}{head}{text}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - a message must never stop the command
            self.handleError(record)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of the `kikimimi` program: a Python warning becomes one log record without the
    source path and line — kikimimi's own on the ``kikimimi.warnings`` logger (WARNING: shown), other
    libraries' on ``py.warnings.<package>`` (INFO: shown with ``-v``)."""
    parts = Path(str(filename)).parts
    own = "kikimimi" in parts and "site-packages" not in parts[parts.index("kikimimi"):]
    if own:
        logging.getLogger("kikimimi.warnings").warning("%s", message)
        return
    package = next((parts[i + 1] for i in range(len(parts) - 1) if parts[i] in ("site-packages", "dist-packages")),
                   Path(str(filename)).stem)
    logging.getLogger(f"py.warnings.{package}").info("%s (%s)", message, category.__name__)


def _verbosity(argv: Sequence[str]) -> int:
    """How many ``-v`` / ``--verbose`` (``-vv`` counts two) are on the command line (before ``--``)."""
    n = 0
    for a in argv:
        if a == "--":
            break
        if a == "--verbose":
            n += 1
        elif len(a) > 1 and a[0] == "-" and a[1] != "-" and set(a[1:]) == {"v"}:
            n += len(a) - 1
    return n


def console_main(argv: Sequence[str] | None = None) -> int:
    """The ``kikimimi`` program (console script, ``python -m kikimimi``): :func:`main`, with an input error
    (bad file, bad setting, missing file, unavailable device) reported as one line naming the command, instead
    of a traceback. Other exceptions are bugs and keep their traceback."""
    import os
    import warnings

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "kikimimi")
    handler, root = _ConsoleHandler(command, _verbosity(argv)), logging.getLogger()
    saved = (root.level, warnings.showwarning)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if handler.verbosity > 1 else logging.INFO)
    warnings.showwarning = _show_warning
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
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        warnings.showwarning = saved[1]


if __name__ == "__main__":
    raise SystemExit(console_main())
