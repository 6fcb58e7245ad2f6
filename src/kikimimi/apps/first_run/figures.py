"""The first run's own figures: the machine it ran on and what the README states (times, sizes, scores).

:func:`describe_machine` reads the CPU model, the cores, the vector extensions that matter for PyTorch on a CPU
(AVX2, AVX-512, AMX) and the 1-minute load average; :func:`machine_line` prints it at the start of the run and
:func:`load_factor` turns the load into how much slower than a quiet machine the stages will probably run.
:func:`run_figures` collects, at the end, every figure the README quotes into ``summary.json``'s ``figures``
(its keys are :data:`FIGURE_KEYS`; ``tests/apps/test_first_run_summary.py`` checks the README's figure table against
them, so the two cannot drift apart).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["FIGURE_KEYS", "describe_machine", "machine_line", "load_factor", "folder_mb", "run_figures"]

#: The keys of ``summary.json``'s ``figures``: what the README may state about a first run.
FIGURE_KEYS = ("machine", "data_kind", "total_s", "stage_s", "output_mb", "dataset_cache_mb", "venv_mb", "probes",
               "zeroshot_accuracy", "zeroshot_chance", "search_precision", "shipped_zeroshot_accuracy",
               "shipped_search_precision", "class_word_accuracy", "nn_class_word_accuracy", "caption_chance",
               "shipped_class_word_accuracy")

_VECTOR = re.compile(r"^(avx2|avx512\w*|avx_vnni|amx\w*)$")


def describe_machine(cpuinfo: str | None = None, load_1min: float | None = None,
                     cores: int | None = None, usable: int | None = None) -> dict[str, Any]:
    """``{"cpu", "cores", "usable_cores", "vector_flags", "load_1min", "platform"}`` of this machine.

    The arguments replace what is read from ``/proc/cpuinfo``, ``os.getloadavg`` and the CPU counts (tests).
    ``vector_flags``: the AVX2 / AVX-512 / AVX-VNNI / AMX flags the CPU reports, sorted (empty when unknown).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    cpu = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine() or "unknown"
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    if load_1min is None:
        try:
            load_1min = os.getloadavg()[0]
        except (OSError, AttributeError):
            load_1min = None
    cores = cores if cores is not None else os.cpu_count() or 1
    if usable is None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return {"cpu": cpu, "cores": cores, "usable_cores": usable,
            "vector_flags": sorted({f for f in flags if _VECTOR.match(f)}),
            "load_1min": None if load_1min is None else round(float(load_1min), 2),
            "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"}


def _flags_text(flags: list[str]) -> str:
    """``avx2 avx512(f, bw, …) amx(bf16, tile, …)``: the families with their members, short."""
    groups: dict[str, list[str]] = {}
    for f in flags:
        family = "avx512" if f.startswith("avx512") else "amx" if f.startswith("amx") else f
        groups.setdefault(family, []).append(f[len(family):].lstrip("_") if family != f else "")
    parts = [name + (f"({', '.join(m for m in members if m)})" if any(members) else "")
             for name, members in groups.items()]
    return " ".join(parts) if parts else "no AVX2/AVX-512/AMX reported"


def load_factor(machine: Mapping[str, Any]) -> float:
    """How much slower than on a quiet machine the run will probably go: ``(load + cores) / cores``, at least 1
    (the run itself keeps the usable cores busy; other work shares them)."""
    load, cores = machine.get("load_1min"), max(1, int(machine.get("usable_cores") or 1))
    return 1.0 if load is None else max(1.0, (float(load) + cores) / cores)


def machine_line(machine: Mapping[str, Any]) -> str:
    """One line for the start of the run, with a warning when other work keeps the cores busy."""
    load = machine.get("load_1min")
    text = (f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
            f"{_flags_text(list(machine.get('vector_flags', [])))}, load {'?' if load is None else f'{load:.2f}'} "
            "(1 min)")
    factor = load_factor(machine)
    if factor >= 1.5:
        text += (f" — busy: other work keeps the cores loaded, so expect the stages to take up to about "
                 f"{factor:.1f}× as long as on a quiet machine")
    return text


def folder_mb(path: Path | str | None) -> float | None:
    """Disk use of a folder (allocated blocks, symbolic links not followed) in MB; ``None`` when it is missing."""
    if path is None or not Path(path).is_dir():
        return None
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return round(total / 1e6, 1)


def venv_dir() -> Path | None:
    """The virtual environment this Python runs in (``sys.prefix`` when it differs from the base), else ``None``."""
    return Path(sys.prefix) if sys.prefix != getattr(sys, "base_prefix", sys.prefix) else None


def _probe_means(report_json: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {model: {probe: mean}}}`` from the evaluation's ``report.json`` (empty when it is missing)."""
    if not report_json.is_file():
        return {}
    report = json.loads(report_json.read_text(encoding="utf-8"))
    return {task: {model: {probe: r["mean"] for probe, r in res.get("probes", {}).items()}
                   for model, res in entry.get("results", {}).items()}
            for task, entry in report.get("tasks", {}).items()}


def run_figures(out: Path, summary: Mapping[str, Any], *, dataset_cache: Path | None = None) -> dict[str, Any]:
    """Every figure the README states about a first run, measured from this run (keys: :data:`FIGURE_KEYS`).

    Times in seconds, sizes in MB on disk (``None`` where not applicable: ``dataset_cache_mb`` with generated
    sounds, ``venv_mb`` outside a virtual environment), scores as fractions; ``probes`` is
    ``{task: {model: {probe: mean}}}`` (every row of the probe table: the from-scratch runs, the packaged encoder as
    shipped and further pre-trained, their random-init twins, log-mel statistics). ``zeroshot_*`` and
    ``search_precision`` (share of the top-3 text-search hits of the queried class) are the from-scratch CLAP's,
    ``shipped_*`` the packaged ``open-clap-tiny``'s on the same held-out clips (``shipped_class_word_accuracy``:
    the packaged captioner's captions of the caption stage's held-out clips).
    """
    clap, captions = summary.get("clap") or {}, summary.get("captions") or {}
    shipped = summary.get("shipped_clap") or {}
    figures = {"machine": summary.get("machine"), "data_kind": (summary.get("data") or {}).get("kind"),
               "total_s": summary.get("seconds"), "stage_s": dict(summary.get("stages") or {}),
               "output_mb": folder_mb(out), "dataset_cache_mb": folder_mb(dataset_cache),
               "venv_mb": folder_mb(venv_dir()), "probes": _probe_means(Path(out) / "report" / "report.json"),
               "zeroshot_accuracy": clap.get("zeroshot_accuracy"), "zeroshot_chance": clap.get("chance"),
               "search_precision": clap.get("search_precision"),
               "shipped_zeroshot_accuracy": shipped.get("zeroshot_accuracy"),
               "shipped_search_precision": shipped.get("search_precision"),
               "class_word_accuracy": captions.get("class_word_accuracy"),
               "nn_class_word_accuracy": captions.get("nn_class_word_accuracy"),
               "caption_chance": captions.get("chance"),
               "shipped_class_word_accuracy": captions.get("shipped_class_word_accuracy")}
    return figures
