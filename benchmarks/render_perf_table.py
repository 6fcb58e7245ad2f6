"""The README's CPU performance table, rendered from the committed JSON of ``benchmarks/bench_cpu_paths.py``.

Each file under ``benchmarks/results/`` named ``cpu_paths*.json`` is one run of the benchmark (``--json FILE``). For
each run: one line naming the CPU, its flags, the library versions, the load average at start and end (the machine
may be shared), the date and the command, then one row per model and thread count: fp32 eager clips/s (10-s
clips) and, for every other path, its speed as a multiple of fp32 with the minimum cosine of its clip embeddings
to fp32's on the run's real clips; the fastest path at cosine >= 0.999 is in bold; and the matmul peaks measured in
the same process with the best int8 path's share of the int8 peak.

The block sits between ``<!-- cpu paths: begin`` and ``<!-- cpu paths: end -->`` in README.md;
``tests/benchmarks/test_render_perf_table.py`` fails when it differs from what this script renders.

Usage: python benchmarks/render_perf_table.py [--write | --check] [--readme README.md] [FILE.json ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN = "<!-- cpu paths: begin"
END = "<!-- cpu paths: end -->"
BEGIN_LINE = (f"{BEGIN} (rendered by benchmarks/render_perf_table.py from benchmarks/results/cpu_paths*.json; "
              "tests/benchmarks/test_render_perf_table.py checks it) -->")
#: the columns after fp32, in the benchmark's order
PATHS = ("bf16", "int8", "ort-fp32", "ort-int8", "ort-int8-static")
MIN_COSINE = 0.999
#: how the benchmark's model names read in the table (others: as they are, e.g. the shipped models' names)
LABELS = {"vitb": "ViT-B, official layout (random weights)", "tiny": "ViT-Tiny, 12 blocks (random weights)",
          "micro": "micro (random weights)"}


def result_files(folder: Path = RESULTS) -> list[Path]:
    """The committed runs, sorted by name."""
    return sorted(folder.glob("cpu_paths*.json"))


def _machine_line(machine: dict) -> str:
    load = machine.get("load_avg") or [float("nan")]
    end = machine.get("load_avg_end")
    loads = f"load average {load[0]:.1f} at start" + (f", {end[0]:.1f} at end" if end else "")
    caps = " — torch capped to AVX2, ONNX Runtime not" if machine.get("isa_caps") else ""
    return (f"{machine['cpu']}, {machine['cores']} cores ({' '.join(machine['flags'])}){caps}; torch "
            f"{machine['torch']}, ONNX Runtime {machine['onnxruntime']}; {loads} on a shared machine; "
            f"{machine.get('date', 'date not recorded')}; `nice -n 10 {machine.get('command', '(not recorded)')}`")


def _cell(row: dict | None, best: bool) -> str:
    if row is None:
        return "—"
    text = f"{row['x_fp32']:.2f}× ({row['cos_min']:.4f})"
    if row["cos_min"] < MIN_COSINE:
        text += " †"
    if row.get("bf16_fallbacks"):
        text += " ‡"
    return f"**{text}**" if best else text


def render_run(run: dict) -> list[str]:
    """The lines of one run: its machine line and its table."""
    lines = [f"Measured on {_machine_line(run['machine'])}:", ""]
    lines.append("| model | threads | fp32 clips/s | " + " | ".join(PATHS) + " | peaks GOP/s fp32 / bf16 / int8 "
                 "| best int8: share of int8 peak |")
    lines.append("|---|---:|---:|" + "---:|" * len(PATHS) + "---:|---:|")
    for model in run["models"]:
        name = LABELS.get(model["model"], model["model"])
        for t in model["threads"]:
            rows = {r["path"]: r for r in t["rows"]}
            shown = [r for r in t["rows"] if r["path"] in ("fp32", *PATHS)]  # not the benchmark's extra rows
            fast = [r for r in shown if r["cos_min"] >= MIN_COSINE and not r.get("bf16_fallbacks")]
            best = max(fast, key=lambda r: r["x_fp32"])["path"] if fast else "fp32"
            int8 = [r for r in shown if "int8" in r["path"] and r["cos_min"] >= MIN_COSINE]
            top = max(int8, key=lambda r: r["x_fp32"]) if int8 else None
            share = f"{top['path']} {100 * top['share_of_peak']:.0f} %" if top else "—"
            peaks = t["peaks_gops"]
            fp32 = rows["fp32"]
            cells = [_cell(rows.get(p), p == best) for p in PATHS]
            bf16_peak = "—" if peaks.get("bf16") != peaks.get("bf16") else f"{peaks['bf16']:.0f}"  # NaN: emulated
            speed = f"{fp32['clips_per_s']:.2f}" if fp32["clips_per_s"] < 10 else f"{fp32['clips_per_s']:.1f}"
            if best == "fp32":
                speed = f"**{speed}**"
            lines.append(f"| {name} | {t['threads']} | {speed} | {' | '.join(cells)} | {peaks['fp32']:.0f} / "
                         f"{bf16_peak} / {peaks['int8']:.0f} | {share} |")
    cos_note = run["models"][0]["cosine_on"].split(" from ")[0] if run["models"] else ""  # not this machine's folder
    lines += ["", f"Cells: speed as a multiple of fp32 eager (minimum cosine to fp32's clip embeddings; {cos_note}); "
              f"bold: the fastest at cosine >= {MIN_COSINE}; † below it; ‡ bf16 gave non-finite values on some batch "
              "(recomputed in fp32)."]
    machine = run["machine"]
    if (machine.get("load_avg") or [0])[0] > machine.get("cores", 1):
        lines[-1] += (f" The load average was above the {machine['cores']} cores: other work shared them, so the "
                      "timings are noisy, the rows with as many threads as cores most (their ratios too: each path "
                      "suffers differently).")
    return lines


def render(runs: list[dict]) -> str:
    """The whole README block, markers included."""
    lines = [BEGIN_LINE]
    for i, run in enumerate(runs):
        if i:
            lines.append("")
        lines += render_run(run)
    lines.append(END)
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with its marked block replaced by ``block``.

    Raises:
        ValueError: ``text`` has no begin / end marker pair.
    """
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"no '{BEGIN} … {END}' block")
    return text[:start] + block + text[stop + len(END):]


def current_block(text: str) -> str | None:
    """The marked block of ``text`` (markers included), or None."""
    start, stop = text.find(BEGIN), text.find(END)
    return text[start:stop + len(END)] if 0 <= start < stop else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path, help="runs' JSON (default: benchmarks/results/cpu_paths*.json)")
    ap.add_argument("--readme", type=Path, default=README)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the README's block")
    mode.add_argument("--check", action="store_true", help="exit 1 when the README's block differs")
    args = ap.parse_args(argv)
    files = args.files or result_files()
    if not files:
        print(f"error: no cpu_paths*.json under {RESULTS}", file=sys.stderr)
        return 2
    block = render([json.loads(f.read_text(encoding="utf-8")) for f in files])
    if not (args.write or args.check):
        print(block)
        return 0
    text = args.readme.read_text(encoding="utf-8")
    if args.check:
        same = current_block(text) == block
        if not same:
            print(f"error: {args.readme}: the CPU performance table differs from benchmarks/results; run "
                  "python benchmarks/render_perf_table.py --write", file=sys.stderr)
        return 0 if same else 1
    try:
        args.readme.write_text(replace_block(text, block), encoding="utf-8")
    except ValueError as exc:
        print(f"error: {args.readme}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote the CPU performance table into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
