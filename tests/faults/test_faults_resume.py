"""Fault suite: `kill -9` in the middle of `prep`, `tag`, `zeroshot`, `eval` and `finetune`, then a rerun.

For each command: the killed run leaves no corrupt output, the rerun does not redo what was finished, and the
final outputs equal an uninterrupted run's (byte-identical where the format allows, else within 1e-6).
(`embed`, `index` and `pretrain` have the same test next to their other fault tests.)
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import official_layouts as ol
import pytest
import soundfile as sf
import torch
from clap_fakes import HashTextEncoder, patch_text_encoder, write_tiny_clap2025
from process_kill import count_lines, kill_when, kill_when_written, run_ok

from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main

from .inputs import tone, write_tagger

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _kikimimi(*args: str) -> list[str]:
    return [sys.executable, "-m", "kikimimi", *args]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _tone_folder(folder: Path, n: int, seconds: float) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        sf.write(folder / f"clip {i:03d}.wav", tone(seconds, 150.0 + 23.0 * i), 16000, subtype="PCM_16")
    return folder


def _finished_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_prep_killed_mid_run_keeps_finished_files_and_matches_an_uninterrupted_run(tmp_path, fault_report):
    audio = _tone_folder(tmp_path / "audio", 60, 2.0)
    argv = ["prep", str(audio), "--workers", "1", "--quiet"]
    killed = tmp_path / "killed"
    proc = _start(_kikimimi(*argv, "-o", str(killed)))
    kill_when(proc, lambda: len(list(killed.glob("*.npy"))) >= 5, "5 cached files")
    before = {p.name: p.stat().st_mtime_ns for p in killed.glob("*.npy")}
    assert len(before) < 60, "the kill must land mid-run"
    for name in before:  # every output present is complete (written atomically)
        assert np.load(killed / name).shape[0] == 80
    rerun = run_ok(_kikimimi(*argv, "-o", str(killed)), env=ENV)
    assert {p.name: p.stat().st_mtime_ns for p in killed.glob("*.npy") if p.name in before} == before
    whole = tmp_path / "whole"
    assert main([*argv, "-o", str(whole)]) == 0
    names = sorted(p.name for p in whole.glob("*.npy"))
    assert sorted(p.name for p in killed.glob("*.npy")) == names and len(names) == 60
    for name in names:
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    assert (killed / "manifest.csv").read_text().replace(str(killed), "") == \
        (whole / "manifest.csv").read_text().replace(str(whole), "")
    assert not [p for p in killed.iterdir() if p.name.endswith((".tmp", ".part"))]
    fault_report("prep", killed=1, finished_before_kill=len(before), redone=0, total=60)
    assert rerun.returncode == 0


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> tuple[Path, Path]:
    return write_tagger(tmp_path_factory.mktemp("tagger"))


def test_tag_killed_mid_run_resumes_without_redoing_and_matches_byte_for_byte(tmp_path, tagger, fault_report):
    model, labels = tagger
    audio = _tone_folder(tmp_path / "audio", 30, 12.0)  # two windows each
    argv = ["tag", str(audio), "-m", str(model), "--labels", str(labels), "--top-k", "2", "--device", "cpu"]
    killed = tmp_path / "killed.jsonl"
    proc = _start(_kikimimi(*argv, "--out", str(killed)))
    kill_when(proc, lambda: count_lines(killed) >= 6, "5 tagged files")
    proc.stdout.close()
    lines = _finished_lines(killed)
    done = {json.loads(line)["file"] for line in lines[1:] if line.endswith("\n")}
    assert 5 <= len(done) < 30, "the kill must land mid-run"
    rerun = run_ok(_kikimimi(*argv, "--out", str(killed)), env=ENV)
    redone = {line for line in rerun.stdout.splitlines() if not line.startswith(" ")} & done
    assert not redone, f"finished files were tagged again: {sorted(redone)[:3]}"
    whole = tmp_path / "whole.jsonl"
    assert main([*argv, "--out", str(whole)]) == 0
    assert killed.read_bytes() == whole.read_bytes()
    assert count_lines(whole) == 31
    fault_report("tag", killed=1, finished_before_kill=len(done), redone=0, total=30)


def test_tag_results_file_of_other_settings_is_refused(tmp_path, tagger, capsys):
    model, labels = tagger
    audio = _tone_folder(tmp_path / "audio", 2, 1.0)
    out = tmp_path / "tags.jsonl"
    base = ["tag", str(audio), "-m", str(model), "--labels", str(labels), "--device", "cpu", "--out", str(out)]
    assert main(base) == 0
    assert main([*base, "--top-k", "1"]) == 2
    assert "top_k" in capsys.readouterr().err
    assert main([*base, "--top-k", "1", "--overwrite"]) == 0
    assert all(len(json.loads(line)["windows"][0]["tags"]) == 1 for line in _finished_lines(out)[1:])


#: `kikimimi` in a subprocess with the tests' bag-of-words text encoder (no language model to load)
_WITH_HASH_TEXT = (
    "import sys; sys.path.insert(0, {tests!r})\n"
    "from clap_fakes import HashTextEncoder\n"
    "from kikimimi.inference.clap import CLAPModel\n"
    "encoder = HashTextEncoder(dim=32)\n"
    "CLAPModel._resolve_text_encoder = lambda self: encoder\n"
    "from kikimimi.cli import console_main\n"
    "sys.exit(console_main(sys.argv[1:]))\n"
)


def test_zeroshot_killed_mid_run_resumes_without_redoing_and_matches(tmp_path, fault_report, monkeypatch):
    clap = write_tiny_clap2025(tmp_path / "models")
    audio = _tone_folder(tmp_path / "audio", 48, 2.0)
    argv = ["zeroshot", str(clap), str(audio), "--labels", "a dog barking,rain,a pure tone", "--batch-files", "4",
            "--device", "cpu"]
    script = _WITH_HASH_TEXT.format(tests=str(Path(__file__).resolve().parents[1]))
    killed = tmp_path / "killed.jsonl"
    proc = _start([sys.executable, "-c", script, *argv, "--out", str(killed)])
    kill_when(proc, lambda: count_lines(killed) >= 9, "8 classified files")
    proc.stdout.close()
    done = {json.loads(line)["file"] for line in _finished_lines(killed)[1:] if line.endswith("\n")}
    assert 8 <= len(done) < 48, "the kill must land mid-run"
    rerun = run_ok([sys.executable, "-c", script, *argv, "--out", str(killed)], env=ENV)
    assert not {line for line in rerun.stdout.splitlines() if not line.startswith(" ")} & done
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    whole = tmp_path / "whole.jsonl"
    assert main([*argv, "--out", str(whole)]) == 0
    a, b = _finished_lines(killed), _finished_lines(whole)
    assert a[0] == b[0] and len(a) == len(b) == 49
    for x, y in zip(a[1:], b[1:], strict=True):
        x, y = json.loads(x), json.loads(y)
        assert (x["file"], x["predicted"]) == (y["file"], y["predicted"])
        assert [s["label"] for s in x["scores"]] == [s["label"] for s in y["scores"]]
        np.testing.assert_allclose([s["score"] for s in x["scores"]], [s["score"] for s in y["scores"]], atol=2e-6)
    fault_report("zeroshot", killed=1, finished_before_kill=len(done), redone=0, total=48)


@pytest.fixture(scope="module")
def task_csv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("task")
    return make_dataset(root / "audio", n_per_class=8, duration_s=0.6, classes=("tone", "chirp", "clicks"))


def assert_same_report(a, b, atol: float = 1e-6, where: str = "report") -> None:
    """Equal JSON values, numbers within ``atol`` (thread counts change float sums), ignoring the run's time and
    output folder."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = {*a, *b} - {"time", "out", "model_dirs"}
        for k in keys:
            assert k in a and k in b, f"{where}.{k} missing on one side"
            assert_same_report(a[k], b[k], atol, f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_report(x, y, atol, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= atol, f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def test_eval_killed_mid_run_reuses_finished_embeddings_and_matches(tmp_path, task_csv, fault_report):
    folder = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2), folder / "w.pth")
    argv = ["eval", str(folder / "w.pth"), "--task", str(task_csv), "--seeds", "1", "--probe", "logistic",
            "--no-plots", "--no-baselines", "--device", "cpu"]
    killed = tmp_path / "killed"
    proc = _start(_kikimimi(*argv, "-o", str(killed)))
    kill_when(proc, lambda: any((killed / "cache").glob("embs-*.npz")), "a cached split")
    cached = {p.name: p.stat().st_mtime_ns for p in (killed / "cache").glob("embs-*.npz")}
    assert not (killed / "report.json").exists(), "the kill must land mid-run"
    run_ok(_kikimimi(*argv, "-o", str(killed)), env=ENV)
    assert {n: (killed / "cache" / n).stat().st_mtime_ns for n in cached} == cached, "finished splits were redone"
    whole = tmp_path / "whole"
    assert main([*argv, "-o", str(whole)]) == 0
    a = json.loads((killed / "report.json").read_text())
    b = json.loads((whole / "report.json").read_text())
    assert_same_report(a, b)
    fault_report("eval", killed=1, finished_before_kill=len(cached), redone=0, total=len(list(
        (whole / "cache").glob("embs-*.npz"))))


def test_finetune_killed_mid_run_resumes_at_the_next_epoch_and_matches(tmp_path, task_csv, fault_report):
    folder = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=1), folder / "w.pth")
    argv = ["finetune", str(folder / "w.pth"), str(task_csv), "--epochs", "4", "--batch-size", "8",
            "--warmup-epochs", "0", "--quiet", "--device", "cpu"]
    killed = tmp_path / "killed"
    proc = _start(_kikimimi(*argv, "-o", str(killed)))
    last: Path | None = None

    def one_epoch_saved() -> bool:
        nonlocal last
        last = next(killed.rglob("last.pt"), None)
        return last is not None

    kill_when(proc, one_epoch_saved, "a saved epoch")
    epoch = torch.load(last, weights_only=True)["epoch"]
    assert epoch < 4, "the kill must land mid-run"
    run_ok(_kikimimi(*argv, "-o", str(killed)), env=ENV)
    whole = tmp_path / "whole"
    assert main([*argv, "-o", str(whole)]) == 0
    a = json.loads((killed / "report.json").read_text())
    b = json.loads((whole / "report.json").read_text())
    assert_same_report(a, b)
    with open(killed / "predictions.csv", newline="") as f1, open(whole / "predictions.csv", newline="") as f2:
        assert list(csv.reader(f1)) == list(csv.reader(f2))
    fault_report("finetune", killed=1, finished_before_kill=epoch, redone=0, total=4)


def test_kill_when_written_waits_for_the_file(tmp_path):
    """The helper itself: it kills only once the file exists, and fails when the run ends first."""
    target = tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, "-c", f"import time,pathlib; time.sleep(0.3); "
                             f"pathlib.Path({str(target)!r}).write_text('x'); time.sleep(60)"])
    kill_when_written(proc, target)
    assert target.exists()
    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    with pytest.raises(AssertionError, match="ended before"):
        kill_when_written(quick, tmp_path / "never")
