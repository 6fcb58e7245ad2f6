"""The first run (``kikimimi demo``, ``bash scripts/run_main.sh``): real recordings → log-mel → short CPU
pre-training of M2D and BYOL-A → probes against random init and chance → M2D-CLAP zero-shot and search →
captions → ``report.md`` + a self-contained ``report.html``. See :mod:`kikimimi.apps.first_run.pipeline`."""

from kikimimi.apps.first_run.pipeline import FirstRunOptions, run_first_run

__all__ = ["FirstRunOptions", "run_first_run"]
