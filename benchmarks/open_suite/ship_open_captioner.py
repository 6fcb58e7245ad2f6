"""Ship the open captioner: a ``kikimimi train-captioner --llm tiny`` run on ``open-clap-tiny`` → a packaged
captioner folder with its evidence.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/open_suite/ship_open_captioner.py \
        /root/.cache/kikimimi/open-train/captioner/open-captioner-tiny-v2 \
        --out src/kikimimi/weights/open-captioner-tiny

Writes ``OUT/`` (assembled beside it, then put in its place as a whole, like ``ship_open_model.py``):

- ``captioner.json``, ``model.safetensors`` (the prefix mapper) and ``lm/`` (the tiny word-level Llama and its
  tokenizer): the run's ``captioner/`` folder, its tensors stored as float16 when the captions of the check clips
  (``--check N`` test clips) come out the same as with float32 (else float32); the audio encoder is not copied:
  ``captioner.json`` names the packaged ``open-clap-tiny``. The nearest-neighbour bank (``nn_bank.*``, one pooled
  embedding per training clip) is left out: it is evaluation-only and would double the folder;
- ``SHA256SUMS``: every shipped file (the registry entry ``open-captioner-tiny`` verifies them on load);
- ``evaluation/open_captioner_eval.json``: ``eval_open_captioner.py`` on the open suite's test clips (the shipped
  folder; the nearest-neighbour baseline from the run's bank);
- ``training.json``: data (the clips and hours per caption kind, sources and licences), compute (``log.jsonl``),
  settings, sizes and commands;
- ``README.md``: the model card (``ship_open_model.open_card``), every number read from those two files.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

os.environ["KIKIMIMI_PRECISION"] = "fp32"  # the shipped numbers are float32-encoder numbers

import eval_open_captioner  # noqa: E402
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

NAME = "open-captioner-tiny"
ROOT = Path("/root/.cache/kikimimi/open-train/captioner")
SHIPPED = ("captioner.json", "model.safetensors", "lm")  # nn_bank.* stays in the run folder


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def to_fp16(folder: Path) -> None:
    """Store every float32 tensor of the folder's ``*.safetensors`` (mapper, language model) as float16."""
    import safetensors.torch as st
    import torch

    for path in [folder / "model.safetensors", *sorted((folder / "lm").glob("*.safetensors"))]:
        state = st.load_file(str(path))
        half = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
        meta = {"format": "pt"}
        path.write_bytes(st.save(half, metadata=meta))


def same_captions(a: Path, b: Path, files: list[str]) -> int:
    """How many of ``files`` the captioner folders ``a`` and ``b`` caption identically (beam 3)."""
    from kikimimi.inference.captioner import load_captioner

    ca, cb = load_captioner(a).caption(files, beam_size=3), load_captioner(b).caption(files, beam_size=3)
    return sum(x == y for x, y in zip(ca, cb, strict=True))


def ev_hours(captions: Path, corpus: Path) -> float:
    """Hours of audio of the run's caption table (durations from the corpus's ``corpus.csv``)."""
    with (corpus / "corpus.csv").open(newline="", encoding="utf-8") as fh:
        dur = {str((corpus / r["file_name"]).resolve()): float(r["duration_s"]) for r in csv.DictReader(fh)}
    return sum(dur.get(f, 0.0) for f in trained_clips(captions)) / 3600


def trained_clips(captions: Path) -> set[str]:
    """The resolved audio paths of the run's caption table."""
    with captions.open(newline="", encoding="utf-8") as fh:
        return {str(Path(row["file_name"]).resolve()) for row in csv.DictReader(fh)}


def card(ev: dict, report: dict) -> str:
    """The model card; every score is read from ``report`` (evaluation/open_captioner_eval.json)."""
    kw, m = report["class_words"], report["metrics"]
    rows = [f"| {t} | {k['n']} | {pct(k['captioner'])} | {pct(k['nearest_neighbour'])} | {pct(k['chance'])} |"
            for t, k in kw.items()]
    metric_rows = [f"| {who} | " + " | ".join(f"{m[key]['scores'][x]:.3f}" if x in m[key]["scores"] else "–"
                                               for x in ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr-D")) + " |"
                   for who, key in ((NAME, "captioner"), ("nearest neighbour", "nearest_neighbour"))]
    examples = [f"| {t} | {e['label']} | {e['caption']} | {e['nn']} |" for t, exs in report["examples"].items()
                for e in exs[:2]]
    above_nn = [t for t, k in kw.items() if k["captioner"] > k["nearest_neighbour"]]
    above_chance = [t for t, k in kw.items() if k["captioner"] > k["chance"]]
    verdict = (f"**Verdict**: the captions name the class more often than the nearest-neighbour baseline on "
               f"{len(above_nn)} of {len(kw)} tasks{' (' + ', '.join(above_nn) + ')' if above_nn else ''}, and more "
               f"often than chance on {len(above_chance)} of {len(kw)}"
               f"{' (' + ', '.join(above_chance) + ')' if above_chance else ''}.")
    c, d, mo, w = ev["compute"], ev["data"], ev["model"], ev["weights"]
    lic = ", ".join(f"{k} {v:.2f} h" for k, v in d["licences_train_hours"].items() if v >= 0.005)
    kinds = ", ".join(f"{k} {v['clips']}" for k, v in ev["view"]["kinds"].items())
    return open_card(
        NAME, pipeline_tag="audio-to-text", tags=["audio", "audio-captioning", "m2d-clap", "kikimimi"],
        intro="kikimimi's own audio captioner: the packaged `open-clap-tiny` audio encoder (frozen) → a prefix mapper "
              "→ a tiny word-level Llama whose vocabulary is the words of its training captions. Trained on a CPU "
              "from openly licensed recordings and captions written from their metadata; no official weights, no "
              "downloaded language model. `kikimimi caption FILE` uses it when no model is given.",
        usage=[f'captioner = kikimimi.load_captioner("{NAME}")   # packaged: no download; files checked against '
               "SHA256SUMS",
               'print(captioner.caption("clip.wav"))   # one caption; a list of files gives a list'],
        sections=[
            ("Evaluation (open suite, held-out test clips)", [
                f"{report['n_test']} test clips of the open suite (unseen voices/prompts, drum kits, instrument "
                "programs and a soundfont never used in training), beam 3. **Class word**: the caption names the "
                "clip's class (language, drum piece, instrument family) in the corpus's words (whole words; the table "
                "of words is in the report). Baseline: the caption of the nearest training clip (cosine of pooled "
                f"`open-clap-tiny` embeddings). Report: `evaluation/open_captioner_eval.json` (CPU: {report['cpu']}); "
                f"command: `{report['command']}`.", "",
                f"| task | test clips | {NAME} class word % | nearest neighbour % | chance % |",
                "|---|---:|---:|---:|---:|", *rows, "", verdict, "",
                "Against the suite's test-template references (templates never used in training, so n-gram "
                "metrics mostly count the shared content words):", "",
                "| captions | BLEU-1 | BLEU-4 | METEOR | ROUGE-L | CIDEr-D |", "|---|---:|---:|---:|---:|---:|",
                *metric_rows, "", "| task | class | caption | nearest neighbour |", "|---|---|---|---|", *examples]),
            ("Model", [
                f"- audio: `{mo['audio_model']}` (packaged, loaded by name; not copied), {mo['audio_embedding_dim']}-d "
                "frames of 0.16 s",
                f"- prefix mapper: {mo['mapper']['prefix_len']} prefix vectors, width {mo['mapper']['width']}, depth "
                f"{mo['mapper']['depth']} ({mo['mapper_params']:,} parameters)",
                f"- language model: tiny word-level Llama, {mo['lm']['hidden_size']}-d, {mo['lm']['layers']} layers, "
                f"{mo['lm']['vocab_size']:,} words ({mo['lm_params']:,} parameters), trained with the mapper",
                f"- stored as {w['dtype']}: {w['folder_bytes']:,} bytes in all ({w['dtype_check']})"]),
            ("Training", [
                f"- data: {d['train_items']:,} clips, {d['train_hours']:.2f} h of the open corpus "
                f"({d['corpus_hours']:.2f} h), at most a quota of clips per caption kind drawn evenly over the "
                f"source packages ({kinds}); all their captions ({ev['n_examples']:,} caption examples); per "
                f"licence: {lic} (the rest under 0.01 h each; all in training.json); "
                "the open suite's and the first run's test clips are excluded from the corpus (leak-checked)",
                f"- {c['step']} steps of batch {c['batch_size']} at peak lr {ev['settings']['lr']} (cosine, warm-up "
                f"{ev['settings']['warmup_steps']}), {c['train_wall_s'] / 60:.0f} min wall on {c['cpu']} "
                f"({c['threads']}; shared machine), final logged loss {c['loss_at_step']:.3f}; clip features "
                "computed once with the frozen encoder",
                f"- commands: `{ev['commands']['view']}`; `{ev['commands']['train']}`; shipped with "
                f"`{ev['commands']['ship']}`",
                f"- choice of settings: {ev['settings_choice']}"]),
            ("Intended use and limits", [f"- {line}" for line in ev["limits"]]),
            ("Files", [f"- `{n}` SHA-256 `{h}`" for n, h in w["sha256"].items()]
             + ["- `training.json` (data, licences, compute, settings), `evaluation/open_captioner_eval.json`"]),
        ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="the captioner run folder (with captioner/ at the end)")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write (replaced at the end)")
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE)
    p.add_argument("--view", type=Path, default=None, help="the training view's summary (default: train_view.json "
                   "beside the run's caption table)")
    p.add_argument("--check", type=int, default=60, help="test clips captioned in float16 and float32 (default 60)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test clips per task (smoke runs)")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    started = time.perf_counter()
    run_dir = a.run_dir.resolve()
    source = run_dir / "captioner"
    config = read_run(run_dir)
    if not (source / "captioner.json").is_file():
        raise SystemExit(f"'{run_dir}': the run has not finished (no captioner/ folder); resume it first")
    meta = json.loads((source / "captioner.json").read_text(encoding="utf-8"))
    staging = staging_for(a.out)
    staging.mkdir(parents=True)
    for name in SHIPPED:
        (shutil.copytree if (source / name).is_dir() else shutil.copyfile)(source / name, staging / name)
    files = eval_open_captioner.test_files(a.suite, None)
    check = [str(a.suite / f) for f in files[:: max(1, len(files) // a.check)][: a.check]]
    to_fp16(staging)
    same = same_captions(source, staging, check)
    if same == len(check):
        dtype, note = "float16", f"float16: the same captions as float32 on {same}/{len(check)} test clips"
    else:  # outputs changed: ship float32
        for name in ("model.safetensors", "lm"):
            shutil.rmtree(staging / name) if (staging / name).is_dir() else None
            (shutil.copytree if (source / name).is_dir() else shutil.copyfile)(source / name, staging / name)
        dtype, note = "float32", f"float32: float16 changed {len(check) - same}/{len(check)} test captions"
    print(f"== {note}", flush=True)
    report_path = staging / "evaluation" / "open_captioner_eval.json"
    report_path.parent.mkdir()
    eval_argv = ["--model", str(staging), "--nn-bank", str(source), "--suite", str(a.suite), "--out", str(report_path)]
    eval_open_captioner.main(eval_argv + (["--limit", str(a.limit)] if a.limit else []))
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["command"] = (f"python benchmarks/open_suite/eval_open_captioner.py --model {NAME} --nn-bank {source} "
                         f"--suite {a.suite}")
    report["model"] = NAME
    atomic_write_json(report_path, report)
    names = [str(f.relative_to(staging)) for f in sorted(staging.rglob("*")) if f.is_file()
             and f.parent.name != "evaluation"]
    names.remove("model.safetensors")
    sums = write_sums(staging, ["model.safetensors", *names])
    import safetensors.torch as st

    lm_cfg = json.loads((staging / "lm" / "config.json").read_text(encoding="utf-8"))
    captions = Path(meta["training"]["captions"])
    view_path = a.view or captions.parent / "train_view.json"
    view = json.loads(view_path.read_text(encoding="utf-8")) if view_path.is_file() else {"kinds": {}}
    compute = compute_facts(run_dir, config, int(meta["training"]["steps"]))
    compute["threads"] = "1 (OMP_NUM_THREADS=1, nice -n 10)"
    ev = {
        "name": NAME, "licence": "Apache-2.0",
        "model": {"audio_model": meta["audio_model"], "audio_embedding_dim": meta["audio_embedding_dim"],
                  "mapper": meta["mapper"], "lm": {"hidden_size": lm_cfg["hidden_size"],
                                                   "layers": lm_cfg["num_hidden_layers"],
                                                   "vocab_size": lm_cfg["vocab_size"]},
                  "mapper_params": sum(t.numel() for t in st.load_file(str(staging / "model.safetensors")).values()),
                  "lm_params": sum(t.numel() for f in (staging / "lm").glob("*.safetensors")
                                   for t in st.load_file(str(f)).values())},
        "weights": {"dtype": dtype, "dtype_check": note, "sha256": sums,
                    "folder_bytes": sum(f.stat().st_size for f in staging.rglob("*") if f.is_file())},
        "data": data_facts(config, a.corpus.resolve(), trained_clips(captions)),
        "view": view, "n_examples": meta["training"]["n_examples"],
        "compute": compute,
        "settings": {k: config.get(k) for k in ("steps", "batch_size", "lr", "warmup_steps", "weight_decay", "seed")}
        | {"mapper": config["captioner"]["mapper"], "train_lm": True},
        "settings_choice": "two short measured runs on this loaded 2-core machine: 600 clips × 60 steps of batch 32 "
                           "with 2 threads ran 4.95 samples/s; 200 clips × 40 steps with OMP_NUM_THREADS=1 ran 23.7 "
                           f"samples/s, so the final run uses one thread and as many steps ({config.get('steps')} of "
                           f"batch {config.get('batch_size')}, {compute['epochs']} epochs of the caption examples) as "
                           "fit about 20 min; lr 1e-3 is the measured default of the tiny-LM path "
                           "(kikimimi.training.captioner.DEFAULT_LR); the view's quota is in training.json (view); "
                           "benchmarks/open_suite/README.md has the runs compared",
        "commands": {
            "view": f".venv/bin/python benchmarks/open_suite/captioner_view.py --corpus {a.corpus} "
                    f"--out {captions.parent}",
            "train": f"OMP_NUM_THREADS=1 nice -n 10 kikimimi train-captioner --audio-model open-clap-tiny "
                     f"--captions {captions} --llm tiny --out {run_dir.parent} --run-name {run_dir.name} "
                     f"--steps {config.get('steps')} --batch-size {config.get('batch_size')} --lr {config.get('lr')} "
                     "--save-every 100 --no-progress",
            "ship": "HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python "
                    + shlex.join(["benchmarks/open_suite/ship_open_captioner.py", *argv]),
            "eval": report["command"],
        },
        "limits": [
            "its words are the words of its training captions (templated from package metadata: languages and "
            "voices of telephone prompts, drum pieces and kits, instrument programs and families, notes, game and "
            "UI sound names); anything else gets the closest of those descriptions",
            f"about {compute['train_wall_s'] / 60:.0f} minutes of CPU training on {ev_hours(captions, a.corpus):.1f} h "
            "of audio: on clips unlike its training clips it falls back on its most frequent training descriptions "
            "(see the verdict above); treat its captions as hints, not labels",
            "no question answering was trained: `ask` with it answers with a caption",
            "part of the training audio is copyleft-licensed (CC-BY-SA, GPL; training.json): the weights are "
            "released under Apache-2.0 by the kikimimi project; check the sources' terms for your use",
        ],
    }
    atomic_write_json(staging / "training.json", ev)
    atomic_write_text(staging / "README.md", card(ev, report))
    install(staging, a.out)
    print(f"== {a.out}: {ev['weights']['folder_bytes']:,} bytes ({dtype}); "
          f"{(time.perf_counter() - started) / 60:.1f} min ({cpu_model()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
