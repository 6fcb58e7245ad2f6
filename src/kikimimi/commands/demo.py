"""`kikimimi demo`: the first run — real recordings (Debian packages) → log-mel → short CPU pre-training of M2D
and BYOL-A → probes against random init and chance → M2D-CLAP zero-shot and text search → captions →
``report/report.md`` and a self-contained ``report/report.html``.

The pipeline lives in :mod:`kikimimi.apps.first_run`; this module only parses the flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = "Run the first-run pipeline on real recordings (Debian packages; --offline: generated sounds)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--offline", action="store_true",
                        help="use generated sounds instead of downloading real recordings with apt-get")
    parser.add_argument("--data-cache", type=Path, default=None,
                        help="where the downloaded packages and the real set are cached "
                             "(default: $KIKIMIMI_HOME/datasets)")
    parser.add_argument("--deb-dir", type=Path, default=None, help="folder with already downloaded .deb files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes for prep")
    parser.add_argument("--m2d-steps", type=int, default=None, help="M2D pre-training steps")
    parser.add_argument("--byola-steps", type=int, default=None, help="BYOL-A pre-training steps")
    parser.add_argument("--further-steps", type=int, default=None,
                        help="further pre-training steps of the packaged open-m2d-tiny on the pool (0: leave it out)")
    parser.add_argument("--clap-steps", type=int, default=100, help="tiny M2D-CLAP pre-training steps")
    parser.add_argument("--clap-weight", type=float, default=None,
                        help="CLAP loss weight of the tiny M2D-CLAP (default 1 for this short run; the official "
                             "recipe and the `kikimimi pretrain` default is 0.01)")
    parser.add_argument("--caption-steps", type=int, default=300, help="captioner training steps")
    parser.add_argument("--skip-clap", action="store_true", help="leave out the audio–language stages")
    parser.add_argument("--skip-captions", action="store_true", help="leave out the caption stage")
    parser.add_argument("--keep-intermediate", action="store_true",
                        help="keep intermediate checkpoints and the generated set's log-mel caches")
    parser.add_argument("--probe-seeds", type=int, default=3, help="probe seeds per model and task (default 3)")
    parser.add_argument("--clips-per-class", type=int, default=40, help="generated clips per class (--offline)")
    parser.add_argument("--duration-s", type=float, default=3.0, help="generated clip length in s (--offline)")


def run(args: argparse.Namespace) -> int:
    from kikimimi.apps.first_run import FirstRunOptions, run_first_run

    given = {k: v for k, v in vars(args).items() if v is not None and k in FirstRunOptions.__dataclass_fields__}
    seeds = tuple(42 + i for i in range(max(1, args.probe_seeds)))
    summary = run_first_run(FirstRunOptions(**{**given, "out": Path(args.out), "probe_seeds": seeds}))
    return 1 if summary.get("failed") else 0
