"""Bit-identity fingerprints of kikimimi's outputs, to diff two checkouts (issue 26: "outputs are unchanged").

From fixed seeds it writes tiny inputs into a temporary folder (generated clips, a tiny official-layout M2D
file, a tiny M2D-CLAP 2025 file, a tiny word-level Llama as the CLAP text encoder of the CLI surfaces; the
writers are the test helpers in ``tests/``), runs the public surfaces that old and new trees share and
prints one JSON object: per output array its SHA-256 (of dtype, shape and bytes), shape, min and max; per text
output its SHA-256 and the text. Two runs on the same machine are equal iff the outputs are bit-identical.

Surfaces (``--fast``: the in-process ones only, a few seconds):

- ``embed_api``: ``kikimimi.load(file).embed([paths])`` ``[B, D]`` (three 1 s clips and one 11 s clip) and
  ``embed_frames`` ``[B, T, D]`` + timestamps of the short clips (fast);
- ``clap_api``: ``kikimimi.load_clap(file, text_encoder=<seeded word-vector encoder>)``: ``encode_audio``,
  ``encode_text`` and ``evaluation.zeroshot.zero_shot_scores`` (fast);
- ``embed_cli``: ``kikimimi embed --level clip`` and ``--level frame`` output files;
- ``zeroshot_cli``: ``kikimimi zeroshot --json`` labels and scores (as printed, 6 decimals);
- ``pretrain_m2d`` / ``pretrain_byola`` / ``pretrain_m2d_clap``: ``kikimimi pretrain`` for four seeded steps:
  the losses in ``log.jsonl`` and the final checkpoint's weights;
- ``captioner``: ``kikimimi train-captioner --llm tiny`` for six seeded steps (logged loss, weights), then
  ``kikimimi caption --json`` (the captions), with each tree's default captioner recipe;
- ``captioner_api``: the same training and captions through the Python API with the recipe pinned to 8d9e937's
  (``prefix_norm=False`` where the setting exists; the captioner's modules are found where each tree has them);
- ``first_run``: ``kikimimi demo --offline`` with two pre-training steps per encoder: the probe table of its
  ``report/report.json``, the pre-training losses and exported weights, and the task embeddings it cached.

Threads are fixed to one (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``), ``KIKIMIMI_PRECISION=fp32``
(``--precision``) and ``KIKIMIMI_HOME`` is inside the work folder. The CLI surfaces run as ``python -m kikimimi``
subprocesses with ``PYTHONPATH`` set to the tree under test. A surface that fails is recorded as
``{"error": "<one line>"}`` and the others still run.

Run (about 3 minutes on two loaded cores; ``--fast``: seconds)::

    mkdir /tmp/before && git archive 8d9e937 | tar -x -C /tmp/before
    nice -n 10 .venv/bin/python benchmarks/outputs_fingerprint.py --src /tmp/before/src > before.json
    nice -n 10 .venv/bin/python benchmarks/outputs_fingerprint.py --src src > after.json
    .venv/bin/python benchmarks/outputs_fingerprint.py --compare before.json after.json   # exit 1 if any differ
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEED = 0
FAST = ("embed_api", "clap_api")
SLOW = (
    "embed_cli",
    "zeroshot_cli",
    "pretrain_m2d",
    "pretrain_byola",
    "pretrain_m2d_clap",
    "captioner",
    "captioner_api",
    "first_run",
)
SURFACES = FAST + SLOW
LABELS = ("dog barking", "a 440 Hz tone", "rain on a roof")
CLASSES = ("tone", "chirp", "noise_burst", "clicks")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=REPO / "src", help="the src folder of the tree under test")
    p.add_argument("--fast", action="store_true", help=f"only the in-process surfaces ({', '.join(FAST)})")
    p.add_argument("--only", default="", help="comma-separated surfaces to run (default: all)")
    p.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temp one)")
    p.add_argument(
        "--precision",
        default="fp32",
        help="KIKIMIMI_PRECISION for every surface (default fp32: the arithmetic pinned, so that a tree "
        "whose default is a measured 'auto' choice compares computations; 'unset': the tree's own "
        "default)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A.json", "B.json"),
        help="print the outputs that differ between two fingerprint files (exit 1 if any) and stop",
    )
    return p.parse_args(argv)


ARGS = _parse(None) if __name__ == "__main__" else None
if ARGS is not None:  # before numpy/torch are imported: one thread, the tree under test first on the path
    os.environ.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONHASHSEED="0",
    )
    if ARGS.precision != "unset":  # trees from before the variable ignore it (their default is fp32)
        os.environ["KIKIMIMI_PRECISION"] = ARGS.precision
    os.environ["PYTHONPATH"] = str(ARGS.src.resolve())
    sys.path.insert(0, str(ARGS.src.resolve()))
sys.path.insert(0, str(REPO / "tests"))  # the checkpoint writers (official_layouts, caption_fakes)

import numpy as np  # noqa: E402
import torch  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
# fingerprints
# ---------------------------------------------------------------------------------------------------------------


def array_print(x: Any) -> dict[str, Any]:
    """SHA-256 of ``dtype|shape|bytes`` of an array (tensor, list of floats…), its shape, min and max."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.ascontiguousarray(np.asarray(x))
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
    out: dict[str, Any] = {"sha256": h.hexdigest(), "shape": list(a.shape), "dtype": a.dtype.str}
    if a.size and np.issubdtype(a.dtype, np.number):
        out["min"], out["max"] = float(a.min()), float(a.max())
    return out


def text_print(texts: list[str]) -> dict[str, Any]:
    """SHA-256 of a list of strings (JSON) and the strings themselves."""
    return {"sha256": hashlib.sha256(json.dumps(texts).encode()).hexdigest(), "texts": texts}


def state_print(path: Path) -> dict[str, Any]:
    """One SHA-256 over every tensor of a weight file (``.pth`` / ``.safetensors``), keys sorted."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
    h = hashlib.sha256()
    n = 0
    for key in sorted(state):
        if isinstance(state[key], torch.Tensor):
            h.update(key.encode())
            h.update(array_print(state[key])["sha256"].encode())
            n += 1
    return {"sha256": h.hexdigest(), "tensors": n}


# ---------------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------------


def make_inputs(root: Path, text_lm: bool = True) -> dict[str, Any]:
    """Clips, captions and tiny checkpoints under ``root`` (all seeded; same bytes on every run); the tiny Llama
    text encoder (``llm:PATH``, imports transformers) only with ``text_lm``."""
    import official_layouts as ol
    import soundfile as sf
    from caption_fakes import write_tiny_encoder, write_tiny_llama

    from kikimimi.audio.synthetic import make_dataset

    labels = make_dataset(root / "audio", n_per_class=3, duration_s=1.0, seed=SEED, classes=CLASSES)
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    clips = [root / "audio" / r["file_name"] for r in rows]
    with open(root / "audio" / "captions.csv", "w", newline="") as f:  # file names relative to the CSV
        w = csv.writer(f)
        w.writerow(["file_name", "caption"])
        w.writerows((r["file_name"], f"the sound of a {r['label'].replace('_', ' ')}") for r in rows)
    rng = np.random.default_rng(SEED)
    long_wave = np.concatenate(
        [0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * 5) / 16000), 0.2 * rng.standard_normal(16000 * 6)]
    ).astype(np.float32)
    long_file = root / "long" / "long.wav"
    long_file.parent.mkdir()
    sf.write(long_file, long_wave, 16000, subtype="PCM_16")
    encoder = write_tiny_encoder(root / "m2d", seed=SEED)
    texts = [f"the sound of a {c.replace('_', ' ')}" for c in CLASSES] + [f"a {t}" for t in LABELS] + list(LABELS)
    lm = write_tiny_llama(root / "text-lm", texts, seed=SEED) if text_lm else None
    tiny = dict(embed_dim=64, depth=2, input_size=(80, 64), patch_size=(16, 16))
    inner = ol.m2d_encoder_state(**tiny, norm_stats=ol.CLAP2025_NORM_STATS, seed=SEED)
    inner.update(ol.clap2025_proj_state(64, 1, 1.0, text_proj="linear", text_dim=64, seed=SEED))
    clap = ol.write_state(
        root / "clap" / "m2d_clap_vit_base-80x64p16x16-2025test" / "checkpoint-30.pth",
        {f"backbone.{k}": v for k, v in inner.items()},
        "model",
    )
    return {
        "root": root,
        "labels": labels,
        "clips": clips,
        "short": clips[:3],
        "long": long_file,
        "captions": root / "audio" / "captions.csv",
        "encoder": encoder,
        "text_encoder": f"llm:{lm}" if lm else None,
        "clap": clap,
    }


# ---------------------------------------------------------------------------------------------------------------
# surfaces
# ---------------------------------------------------------------------------------------------------------------


def _cli(args: list[str], cwd: Path) -> str:
    """``python -m kikimimi ARGS`` with the tree under test; stdout (raises with stderr's tail on failure)."""
    proc = subprocess.run([sys.executable, "-m", "kikimimi", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["(no stderr)"]
        raise RuntimeError(f"kikimimi {args[0]} exited {proc.returncode}: {last[0].strip()}")
    return proc.stdout


def embed_api(inp: dict[str, Any]) -> dict[str, Any]:
    import kikimimi

    model = kikimimi.load(str(inp["encoder"]), device="cpu")
    files = [str(p) for p in inp["short"]]
    frames, stamps = model.embed_frames(files)
    return {
        "clip": array_print(model.embed(files)),
        "long_clip": array_print(model.embed([str(inp["long"])])),
        "frames": array_print(frames),
        "timestamps_ms": array_print(stamps),
    }


def clap_api(inp: dict[str, Any]) -> dict[str, Any]:
    from clap_fakes import HashTextEncoder

    import kikimimi
    from kikimimi.evaluation.zeroshot import zero_shot_scores

    # a text-encoder object (both trees take one): seeded word vectors, no transformers import
    model = kikimimi.load_clap(str(inp["clap"]), text_encoder=HashTextEncoder(dim=64), device="cpu")
    files = [str(p) for p in inp["short"]] + [str(inp["long"])]
    scores = zero_shot_scores(model, files, list(LABELS))
    return {
        "audio": array_print(model.encode_audio(files)),
        "text": array_print(model.encode_text(list(LABELS))),
        "zero_shot_scores": array_print(scores),
    }


def embed_cli(inp: dict[str, Any]) -> dict[str, Any]:
    root, out = inp["root"], {}
    files = [*inp["short"], inp["long"]]
    for level in ("clip", "frame"):
        folder = root / f"embed-{level}"
        _cli(
            ["embed", "-m", inp["encoder"], "-o", folder, "--level", level, "--device", "cpu", "--no-progress", *files],
            root,
        )
        for f in sorted(p for p in folder.rglob("*") if p.suffix in (".npy", ".npz")):
            name = f"{level}:{f.relative_to(folder)}"
            if f.suffix == ".npy":
                out[name] = array_print(np.load(f))
            else:
                with np.load(f) as z:
                    out.update({f"{name}:{k}": array_print(z[k]) for k in sorted(z.files)})
    return out


def zeroshot_cli(inp: dict[str, Any]) -> dict[str, Any]:
    files = [*inp["short"], inp["long"]]
    text = _cli(["zeroshot", inp["clap"], *files, "--labels", ",".join(LABELS), "--top", str(len(LABELS)),
                 "--json", "--device", "cpu", "--text-encoder", inp["text_encoder"]], inp["root"])  # fmt: skip
    out = {}
    for row in json.loads(text)["results"]:  # scores as the CLI prints them (6 decimals)
        out[Path(row["file"]).name] = {
            "labels": text_print([p["label"] for p in row["scores"]]),
            "scores": array_print(np.array([p["score"] for p in row["scores"]])),
        }
    return out


def _losses(run: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r and "step" in r]
    losses = [float(r["loss"]) for r in rows]
    return {"steps": [int(r["step"]) for r in rows], "losses": losses, "fingerprint": array_print(losses)}


def _pretrain(inp: dict[str, Any], name: str, method_args: list[str]) -> dict[str, Any]:
    root = inp["root"]
    _cli(["pretrain", *method_args, "--data", root / "audio", "--out", root / "runs", "--run-name", name,
          "--recipe", "cpu-small", "--steps", "4", "--batch-size", "4", "--lr", "1e-3", "--warmup-steps", "1",
          "--device", "cpu", "--amp", "off", "--workers", "0", "--norm-samples", "8", "--min-epoch-size", "8",
          "--seed", str(SEED), "--log-every", "1", "--save-every", "4", "--keep-checkpoints", "1",
          "--no-progress"], root)  # fmt: skip
    run = root / "runs" / name
    out = _losses(run)
    ckpt = run / "checkpoint-4.pth"
    out["weights"] = state_print(ckpt) if ckpt.is_file() else {"missing": ckpt.name}
    return out


def pretrain_m2d(inp: dict[str, Any]) -> dict[str, Any]:
    return _pretrain(inp, "m2d", ["--method", "m2d", "--size", "tiny", "--input-frames", "64"])


def pretrain_byola(inp: dict[str, Any]) -> dict[str, Any]:
    return _pretrain(inp, "byola", ["--method", "byola", "--byola-dim", "64"])


def pretrain_m2d_clap(inp: dict[str, Any]) -> dict[str, Any]:
    method = ["--method", "m2d_clap", "--size", "tiny", "--input-frames", "64", "--captions", inp["captions"],
              "--text-encoder", inp["text_encoder"]]  # fmt: skip
    return _pretrain(inp, "m2d_clap", method)


def captioner(inp: dict[str, Any]) -> dict[str, Any]:
    root = inp["root"]
    _cli(["train-captioner", "--audio-model", inp["encoder"], "--captions", inp["captions"], "--llm", "tiny",
          "--out", root / "captioners", "--run-name", "cap", "--steps", "6", "--batch-size", "4", "--lr", "3e-3",
          "--prefix-len", "2", "--mapper-width", "32", "--mapper-depth", "1", "--device", "cpu",
          "--seed", str(SEED), "--no-progress"], root)  # fmt: skip
    run = root / "captioners" / "cap"
    out = _losses(run)
    model_dir = next(p.parent for p in sorted(run.rglob("captioner.json")))
    out["weights"] = state_print(model_dir / "model.safetensors")
    files = [*inp["short"], inp["long"]]
    text = _cli(["caption", model_dir, *files, "--beam", "2", "--max-tokens", "8", "--device", "cpu", "--json"], root)
    rows = json.loads(text)
    rows = rows if isinstance(rows, list) else rows.get("results", rows)
    out["captions"] = text_print([json.dumps(r.get("caption", r.get("windows")), sort_keys=True) for r in rows])
    return out


def captioner_api(inp: dict[str, Any]) -> dict[str, Any]:
    """The ``captioner`` surface's run through the Python API with the recipe pinned to 8d9e937's: trees with the
    ``prefix_norm`` setting (issue 33, on by default) get ``prefix_norm=False``. The captioner's homes differ by
    version: ``kikimimi.apps.captioning`` (8d9e937) or ``training.captioner_run`` / ``inference.captioner`` /
    ``models.tiny_lm`` (after issue 26)."""
    import dataclasses

    from kikimimi.data.captions import CaptionTable

    try:
        from kikimimi.inference.captioner import load_captioner
        from kikimimi.models.tiny_lm import write_tiny_lm
        from kikimimi.training.captioner_run import train_captioner
    except ImportError:  # before issue 26
        from kikimimi.apps.captioning.model import load_captioner
        from kikimimi.apps.captioning.tiny_lm import write_tiny_lm
        from kikimimi.apps.captioning.train import train_captioner
    try:
        from kikimimi.training.captioner import CaptionerSettings

        prefix_norm = any(f.name == "prefix_norm" for f in dataclasses.fields(CaptionerSettings))
    except ImportError:
        prefix_norm = False
    run = inp["root"] / "captioners" / "cap-api"
    texts = [c for _, caps in CaptionTable.load(inp["captions"]).items() for c in caps]
    settings: dict[str, Any] = {
        "steps": 6, "batch_size": 4, "lr": 3e-3, "seed": SEED, "device": "cpu", "progress": False,
        "train_lm": True, "mapper": {"prefix_len": 2, "width": 32, "depth": 1},
        "lm": str(write_tiny_lm(texts, run / "tiny-lm", seed=SEED)),
    }  # fmt: skip
    if prefix_norm:
        settings["prefix_norm"] = False
    result = train_captioner(str(inp["encoder"]), inp["captions"], run, settings=settings)
    out = _losses(run)
    out["weights"] = state_print(Path(result.model_dir) / "model.safetensors")
    model = load_captioner(result.model_dir, device="cpu")
    files = [str(p) for p in [*inp["short"], inp["long"]]]
    out["captions"] = text_print(list(model.caption(files, beam_size=2, max_new_tokens=8)))
    out["prefix_norm_pinned_off"] = prefix_norm
    return out


def first_run(inp: dict[str, Any]) -> dict[str, Any]:
    root = inp["root"]
    out_dir = root / "demo"
    _cli(["demo", "--out", out_dir, "--offline", "--clips-per-class", "5", "--duration-s", "1", "--m2d-steps",
          "2", "--byola-steps", "2", "--skip-clap", "--workers", "1", "--probe-seeds", "1", "--seed", str(SEED)],
         root)  # fmt: skip
    report = json.loads((out_dir / "report" / "report.json").read_text())
    table = {}
    for task, t in sorted(report["tasks"].items()):
        for model, r in sorted(t["results"].items()):
            for probe, p in sorted(r.get("probes", {}).items()):
                table[f"{task} | {model} | {probe}"] = [p.get("mean"), p.get("std"), p.get("seed_scores")]
    out: dict[str, Any] = {"probe_table": table}
    for run in sorted((out_dir / "pretrain").glob("*/log.jsonl")):
        out[f"pretrain:{run.parent.name}"] = _losses(run.parent)
    for weights in sorted((out_dir / "pretrain").glob("*/kikimimi/model.safetensors")):
        out[f"weights:{weights.parent.parent.name}"] = state_print(weights)
    for cache in sorted((out_dir / "report" / "cache").glob("*.npz")):  # task embeddings; names carry hashes
        key = re.sub(r"-[0-9a-f]{16}$", "", re.sub(r"^embs-(random_)?[0-9a-f]{9,16}", r"embs-\1", cache.stem))
        with np.load(cache) as z:
            for k in sorted(z.files):
                a = z[k]
                if a.dtype.kind in "US":  # clip keys (paths): the work folder's name taken out
                    a = np.array([str(x).replace(str(root), "<work>") for x in a.ravel()], dtype=str)
                out[f"embeddings:{key}:{k}"] = array_print(a)
    return out


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "embed_api": embed_api, "clap_api": clap_api, "embed_cli": embed_cli, "zeroshot_cli": zeroshot_cli,
    "pretrain_m2d": pretrain_m2d, "pretrain_byola": pretrain_byola, "pretrain_m2d_clap": pretrain_m2d_clap,
    "captioner": captioner, "captioner_api": captioner_api, "first_run": first_run,
}  # fmt: skip


def fingerprint(surfaces: tuple[str, ...], work: Path) -> dict[str, Any]:
    """``{"meta": ..., "surfaces": {name: fingerprints or {"error": one line}}, "seconds": {name: s}}``."""
    os.environ["KIKIMIMI_HOME"] = str(work / "home")  # caches (weights fingerprints, CPU-path choices) stay here
    import kikimimi

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    inp = make_inputs(work, text_lm=bool({"zeroshot_cli", "pretrain_m2d_clap"} & set(surfaces)))
    result: dict[str, Any] = {"surfaces": {}, "seconds": {}}
    for name in surfaces:
        t = time.perf_counter()
        try:
            result["surfaces"][name] = RUNNERS[name](inp)
        except Exception as exc:  # one surface failing still leaves the others to compare
            result["surfaces"][name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500]}
        result["seconds"][name] = round(time.perf_counter() - t, 1)
    versions = {}
    for dist in ("numpy", "torch", "transformers", "tokenizers", "scipy", "scikit-learn"):
        try:  # from the installed metadata: nothing imported
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    result["meta"] = {
        "kikimimi": str(Path(kikimimi.__file__).parent),
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
        "seed": SEED,
        "KIKIMIMI_PRECISION": os.environ.get("KIKIMIMI_PRECISION"),
        **versions,
    }
    return result


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}/{key}").items()}
    return {prefix: tree}


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """One line per output whose fingerprint (or error, or text) differs between two results."""
    la, lb = _leaves(a["surfaces"]), _leaves(b["surfaces"])
    lines = []
    for key in sorted(set(la) | set(lb)):
        if key.rsplit("/", 1)[-1] in ("sha256", "error", "texts", "steps") and la.get(key) != lb.get(key):
            va, vb = (str(v)[:70] for v in (la.get(key, "(absent)"), lb.get(key, "(absent)")))
            lines.append(f"{key}: {va} != {vb}")
    return lines


def main(args: argparse.Namespace) -> int:
    if args.compare:
        lines = compare(*(json.loads(p.read_text()) for p in args.compare))
        print("\n".join(lines) if lines else "identical: every output has the same fingerprint")
        return 1 if lines else 0
    surfaces = FAST if args.fast else SURFACES
    if args.only:
        surfaces = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = sorted(set(surfaces) - set(SURFACES))
        if unknown:
            print(f"--only: unknown surfaces {unknown}; known: {', '.join(SURFACES)}", file=sys.stderr)
            return 2
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = fingerprint(surfaces, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="kikimimi-fingerprint-") as tmp:
            result = fingerprint(surfaces, Path(tmp))
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
