"""The first run (`kikimimi demo`, kikimimi.apps.first_run): the real set from local fake .deb files, the
fallback to generated sounds, the verdicts, the ETA, the lean clean-up, the self-contained report.html and a
tiny end-to-end offline run. No apt, no network: the packages are built here with ``dpkg-deb --build``."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kikimimi.apps.first_run import pipeline
from kikimimi.apps.first_run.pipeline import EncoderRun, FirstRunOptions, Progress, verdicts
from kikimimi.apps.first_run.real_data import ASTERISK_PACKAGES, DRUM_PACKAGE, build_real_set
from kikimimi.apps.first_run.report_html import write_report_html
from kikimimi.data.clips import write_wav
from kikimimi.data.debian_sources import PACKAGES, SourceError, Sources
from kikimimi.data.registry_tasks import VOICES

KIT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">
 <name>{name}</name><license>CC0</license><instrumentList>{instruments}</instrumentList>
</drumkit_info>"""
INST = "<instrument><id>{i}</id><name>{name}</name><layer><filename>{file}</filename></layer></instrument>"
DRUMS = ["Kick", "Snare", "Closed Hat", "Floor Tom", "Crash", "Cowbell"]


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def _deb(tree: Path, package: str, debs: Path) -> None:
    """``<debs>/<package>_1.0_all.deb`` from ``tree`` (+ a copyright file), as apt-get download leaves it."""
    doc = tree / "usr/share/doc" / package
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text(f"{package}: test stand-in, CC0\n")
    (tree / "DEBIAN").mkdir(exist_ok=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.org>\n"
        "Description: stand-in\n")
    subprocess.run(["dpkg-deb", "-Znone", "--build", "--root-owner-group", str(tree),
                    str(debs / f"{package}_1.0_all.deb")], check=True, capture_output=True)


@pytest.fixture(scope="module")
def fake_debs(tmp_path_factory) -> Path:
    """Six fake packages at the real packages' paths: five Asterisk voices (16 prompts) and six drum kits."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    root = tmp_path_factory.mktemp("debs")
    debs = root / "debs"
    debs.mkdir()
    seed = iter(range(10_000))
    for pkg, voice in zip(ASTERISK_PACKAGES, VOICES, strict=True):
        tree = root / "trees" / pkg
        folder = tree / PACKAGES[pkg]
        assert folder.name == voice
        for p in [f"vm-p{i}" for i in range(14)] + ["digits/1", "beep"]:
            write_wav(folder / f"{p}.wav", _noise(0.6, next(seed)))
        _deb(tree, pkg, debs)
    tree = root / "trees" / DRUM_PACKAGE
    kits = tree / PACKAGES[DRUM_PACKAGE]
    for k in range(6):
        folder = kits / f"Kit{k}"
        insts = []
        for i, name in enumerate(DRUMS):
            for layer in range(2):
                file = f"s{i}-{layer}.wav"
                write_wav(folder / file, _noise(0.3, next(seed)))
                insts.append(INST.format(i=i, name=name, file=file))
        (folder / "drumkit.xml").write_text(KIT_XML.format(name=f"Kit {k}", instruments="".join(insts)))
    _deb(tree, DRUM_PACKAGE, debs)
    return debs


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_real_set_from_local_debs_is_leak_free_and_cached(fake_debs, tmp_path) -> None:
    lines: list[str] = []
    real = build_real_set(tmp_path / "cache", allow_network=False, deb_dir=fake_debs, n_prompts=8, drum_cap=1,
                          pool_prompts=4, pool_drums=50, log=lines.append)
    assert not real.reused and any("dpkg-deb -x" in line for line in lines)
    assert sorted(real.packages) == sorted([*ASTERISK_PACKAGES, DRUM_PACKAGE])
    assert {p.name for p in real.licences} == {f"{p}.copyright" for p in real.packages}
    tasks = {t.name: _rows(t.csv) for t in real.tasks}
    lang, drums, pool = tasks["language_id"], tasks["drum_type"], _rows(real.pool_csv)
    assert len(lang) == 8 * 5 and {r["label"] for r in lang} == {v[0] for v in VOICES.values()}
    assert {r["label"] for r in drums} == {"kick", "snare", "hihat", "tom", "cymbal", "other"}
    for rows in (lang, drums, pool):
        assert all((real.root / r["file_name"]).is_file() for r in rows)
    # leakage: no task sentence, no task file and no valid/test kit in the pool; prompts/kits on one side
    pool_origins = {r["origin"] for r in pool}
    assert pool_origins.isdisjoint({r["origin"] for r in lang + drums})
    assert {Path(o).stem for o in pool_origins if "asterisk" in o}.isdisjoint({r["prompt"] for r in lang})
    held_kits = {r["kit"] for r in drums if r["split"] != "train"}
    assert held_kits and all(f"/Kit{k[-1]}/" not in o for k in held_kits for o in pool_origins)
    assert any("/Kit" in o for o in pool_origins)  # drum samples of the training kits are in the pool
    assert all(len({r["split"] for r in lang if r["prompt"] == p}) == 1 for p in {r["prompt"] for r in lang})
    # a second call reuses the cached set without touching the packages
    again = build_real_set(tmp_path / "cache", allow_network=False, deb_dir=tmp_path / "none", n_prompts=8,
                           drum_cap=1, pool_prompts=4, pool_drums=50, log=lines.append)
    assert again.reused and again.root == real.root and [t.csv for t in again.tasks] == [t.csv for t in real.tasks]


def test_missing_package_without_network_raises_and_demo_falls_back(tmp_path, monkeypatch) -> None:
    src = Sources(tmp_path / "c", allow_network=False, log=lambda _l: None)
    with pytest.raises(SourceError, match="hydrogen-drumkits: no .deb .* downloads are disabled"):
        src.path("hydrogen-drumkits")

    def fail(*_a, **_k):
        raise SourceError("apt-get download asterisk-core-sounds-en-wav failed with exit code 100: no network")

    monkeypatch.setattr(pipeline, "build_real_set", fail)
    lines: list[str] = []
    data = pipeline.prepare_data(FirstRunOptions(out=tmp_path / "out", clips_per_class=2, duration_s=0.5),
                                 lines.append)
    assert data.kind == "generated" and "no network" in data.fallback_reason
    assert any(line.strip().startswith("NOTE: real recordings unavailable") for line in lines)
    offline = pipeline.prepare_data(FirstRunOptions(out=tmp_path / "out", offline=True, clips_per_class=2,
                                                    duration_s=0.5), lines.append)
    assert offline.kind == "generated" and offline.fallback_reason == "chosen with --offline"


def _res(score: float, std: float) -> SimpleNamespace:
    return SimpleNamespace(score=score, std=std)


def test_verdicts_say_whether_pretraining_beat_random_init_and_why_not() -> None:
    run = EncoderRun("M2D", "M2D ViT-tiny, 300 steps", Path("runs/m2d"), 300, 32, 578, 120.0)
    results = {"drum_type": {run.name: {"linear": _res(0.70, 0.01), "logistic": _res(0.60, 0.0)},
                             "M2D (random init)": {"linear": _res(0.62, 0.02), "logistic": _res(0.65, 0.0)}}}
    found = {v["probe"]: v for v in verdicts(results, [run], ("linear", "logistic"))}
    assert found["linear"]["beats"] and found["linear"]["clear"]
    assert found["linear"]["difference"] == pytest.approx(0.08)
    assert "beats random init by 8.0 points" in found["linear"]["text"]
    assert not found["logistic"]["beats"]
    text = found["logistic"]["text"]
    assert "does **not** beat random init" in text and "run length" in text and "9,600 crops seen" in text
    assert f"1/{pipeline.OFFICIAL_SAMPLES['M2D'] // 9600:,}" in text
    assert verdicts({"t": {"other": {}}}, [run], ("linear",)) == []


def test_progress_eta_is_a_range_scaled_by_the_measured_pace() -> None:
    lines: list[str] = []
    p = Progress(["a", "b", "c"], lines.append, planned={"a": 10.0, "b": 20.0, "c": 30.0})
    assert p.eta_range_s() == pytest.approx((0.9 * 60.0, 1.5 * 60.0))  # no pace yet: the plan, widened
    p.times["a"] = 20.0  # twice as slow as planned
    assert p.eta_range_s() == pytest.approx((0.9 * 2 * 50.0, 2 * 1.5 * 50.0))
    assert p.eta_text().startswith("about 1–3 min left (b, c)")
    p.begin("b", "second")
    p.end("did b")
    assert lines[0] == "\n== 2/3 second" and lines[-1].startswith("   did b; stage time ")
    assert "left (c)" in lines[-1]


def test_clean_up_keeps_exports_and_drops_training_checkpoints(tmp_path) -> None:
    run = tmp_path / "out" / "pretrain" / "m2d_run"
    (run / "kikimimi").mkdir(parents=True)
    (run / "kikimimi" / "config.json").write_text("{}")
    (run / "kikimimi" / "model.safetensors").write_bytes(b"m" * 10)
    for step in (3, 6):
        (run / f"checkpoint-{step}.pth").write_bytes(b"c" * 1000)
    (run / "last.pth").symlink_to("checkpoint-6.pth")
    unfinished = tmp_path / "out" / "pretrain" / "unfinished"
    unfinished.mkdir()
    (unfinished / "checkpoint-2.pth").write_bytes(b"c" * 100)  # no export yet: kept for --resume
    work = tmp_path / "out" / "work"
    (work / "prep").mkdir(parents=True)
    (work / "prep" / "x.npy").write_bytes(b"n" * 500)
    data = SimpleNamespace(kind="generated", work=work)
    freed = pipeline._remove_intermediate(tmp_path / "out", data)
    assert freed == 2000 + 500
    assert sorted(p.name for p in run.iterdir()) == ["kikimimi"]
    assert (run / "kikimimi" / "model.safetensors").is_file() and (unfinished / "checkpoint-2.pth").is_file()
    assert not work.exists()


def _png_bytes() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def test_report_html_is_self_contained_with_chance_lines_audio_and_names(tmp_path) -> None:
    out = tmp_path / "demo"
    (out / "report" / "drum_type").mkdir(parents=True)
    (out / "report" / "drum_type" / "clusters.png").write_bytes(_png_bytes())
    (out / "report" / "drum_type" / "confusion-M2D_ViT-tiny_300_steps-linear.png").write_bytes(_png_bytes())
    result = {"mean": 0.7, "std": 0.01}
    report = {"probes": ["linear"], "models": {"M2D ViT-tiny, 300 steps": {}, "M2D (random init)": {}},
              "tasks": {"drum_type": {"metric": "accuracy", "reference": {"chance": 1 / 6, "majority": 0.2},
                                      "results": {"M2D ViT-tiny, 300 steps": {"probes": {"linear": result}},
                                                  "M2D (random init)": {"probes": {"linear": {"mean": 0.6,
                                                                                              "std": 0.02}}}}}}}
    (out / "report" / "report.json").write_text(json.dumps(report))
    write_wav(out / "clap" / "heldout" / "audio" / "a.wav", _noise(0.5, 1))
    (out / "clap" / "zeroshot.json").write_text(json.dumps({
        "steps": 4, "train_clips": 10, "caption_templates": ["The sound of {labels}."], "text_encoder": "minilm",
        "prompt": "{} can be heard", "n_test": 1, "accuracy": 1.0, "chance": 0.5, "classes": ["snare_drum"],
        "captions": ["snare drum can be heard"], "per_class_accuracy": {"snare_drum": 1.0},
        "predictions": [{"file": "audio/a.wav", "label": "snare_drum", "predicted": "snare_drum",
                         "probability": 0.9}]}))
    (out / "clap" / "search.json").write_text(json.dumps({"results": [
        {"query": "a snare drum", "class": "snare_drum",
         "hits": [{"file": "audio/a.wav", "score": 0.5, "label": "snare_drum", "match": True}]}]}))
    v = {"model": "M2D ViT-tiny, 300 steps", "beats": False, "text": "drum_type: does **not** beat; run length"}
    summary = {"data": {"kind": "real", "summary": "real recordings from Debian packages",
                        "tasks": [{"name": "drum_type", "description": "drum hits"}], "packages": ["hydrogen-drumkits"],
                        "licences": ["/c/licences/hydrogen-drumkits.copyright"]},
               "stages": {"data": 3.0}, "seconds": 3.0, "verdicts": [v],
               "captions": {"skipped": "captions skipped: not installed"}}
    path = write_report_html(out / "report" / "report.html", out, summary)
    page = path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 and page.count("data:audio/wav;base64,") == 2
    assert "<script" not in page and "http://" not in page and "https://" not in page and " href=" not in page
    assert "chance (uniform guess)" in page and "16.7" in page and "70.0 ± 1.0" in page
    assert "M2D ViT-tiny, 300 steps" in page and "<b>not</b> beat" in page and "✘" in page
    assert "a snare drum" in page and "captions skipped: not installed" in page
    assert "hydrogen-drumkits.copyright" in page


def test_tiny_offline_demo_end_to_end(tmp_path) -> None:
    """`kikimimi demo --offline` with a few steps: every stage runs, the output is lean, the report says which
    data it used and whether pre-training helped — for the from-scratch runs and for the packaged encoder, as
    shipped and after one step of further pre-training (when this installation has it)."""
    from kikimimi.checkpoints.registry import default_packaged_model
    from kikimimi.cli import main

    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--offline", "--clips-per-class", "5", "--duration-s", "1",
               "--m2d-steps", "2", "--byola-steps", "2", "--further-steps", "1", "--skip-clap", "--workers", "1",
               "--probe-seeds", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["kind"] == "generated" and summary["data"]["fallback_reason"] == "chosen with --offline"
    shipped = default_packaged_model("encoder") is not None
    assert set(summary["stages"]) == {"data", "log-mel", "pre-training", "evaluation", "report"} | (
        {"further pre-training"} if shipped else set())
    # the figures the README states, measured by the run itself (tests/apps/test_first_run_summary.py: README keys)
    from kikimimi.apps.first_run.figures import FIGURE_KEYS

    figures = summary["figures"]
    assert tuple(figures) == FIGURE_KEYS and figures["machine"]["cores"] >= 1 and figures["output_mb"] > 0
    assert figures["total_s"] == summary["seconds"] and set(figures["stage_s"]) == set(summary["stages"])
    assert figures["probes"]["synthetic8"]["log-mel statistics"]["linear"] >= 0
    assert figures["dataset_cache_mb"] is None and figures["data_kind"] == "generated"
    if shipped:  # the packaged encoder as shipped and further pre-trained, both judged against one random twin
        rows = figures["probes"]["synthetic8"]
        further = "open-m2d-tiny + further pre-training, 1 steps on the pool"
        assert {further, "open-m2d-tiny (shipped, Apache-2.0)", "open-m2d-tiny network (random init)"} <= set(rows)
        assert summary["pretraining"][-1]["name"] == further and summary["pretraining"][-1]["init"]
        assert {v["model"] for v in summary["verdicts"]} >= {further, "open-m2d-tiny (shipped, Apache-2.0)"}
        assert not list((out / "pretrain").glob("*-init.pth"))
    assert len(summary["verdicts"]) == 2 * 2 + (2 * 2 if shipped else 0)  # encoders × two probes on one task
    md = (out / "report" / "report.md").read_text()
    assert "## First run: data, models and what pre-training bought" in md and "generated sounds" in md
    assert "M2D ViT-tiny, 2 steps" in md and "BYOL-A (random init)" in md
    page = (out / "report" / "report.html").read_text()
    assert "data:image/png;base64," in page and "chance (uniform guess)" in page
    assert not list(out.rglob("checkpoint-*.pth")) and not (out / "work").exists()
    assert len(list((out / "pretrain").glob("*/kikimimi/config.json"))) == 2 + shipped
