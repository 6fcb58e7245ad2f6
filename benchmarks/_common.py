"""Shared pieces of the benchmark scripts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a plain float32 ``[n, n] @ [n, n]`` matmul on this machine, measured now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def cpu_model() -> str:
    """The CPU's model name, for the header every benchmark prints (:func:`kikimimi.inference.precision.cpu_name`)."""
    from kikimimi.inference.precision import cpu_name

    return cpu_name()


def emit_json(result: object, path: str | None) -> None:
    """Write ``result`` as indented JSON to ``path`` (and say where), else print it."""
    text = json.dumps(result, indent=1, default=float)
    if path:
        Path(path).write_text(text + "\n")
        print(f"JSON: {path}")
    else:
        print(text)
