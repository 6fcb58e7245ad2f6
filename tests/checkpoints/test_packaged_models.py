"""Models packaged inside kikimimi (``kikimimi/weights/<name>/``, registry ``PACKAGED_MODELS``).

Two halves:

- the shipped folder itself (``open-m2d-tiny``, written by ``benchmarks/open_suite/ship_open_model.py``): it loads
  by name with no network, its weights match the SHA-256 recorded in ``SHA256SUMS``, ``config.json``,
  ``evidence.json`` and the card, it embeds a generated sine with the documented shapes, every score of its card
  (tables and model-index metadata) and every margin of ``evidence.json`` comes from ``evaluation/report.json``,
  ``training.json`` reads as ``kikimimi card --facts``, and every file is package data. These tests
  skip, saying so, only when this checkout has no packaged folder;
- the mechanism, on a tiny stand-in folder (always run): load by name, a damaged or unpinned folder refused,
  ``kikimimi models list`` showing "Apache-2.0" and "packaged".
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from pathlib import Path

import numpy as np
import official_layouts as ol
import pytest
import torch

import kikimimi
from kikimimi.checkpoints import load_encoder, registry, save_kikimimi
from kikimimi.checkpoints.digest import sha256_file
from kikimimi.checkpoints.hub import FetchError, HashMismatchError, resolve_model_source
from kikimimi.checkpoints.registry import PACKAGED_MODELS, get_entry, packaged_sha256
from kikimimi.cli import main

NAME = "open-m2d-tiny"
ENTRY = next(e for e in PACKAGED_MODELS if e.name == NAME)
FOLDER = Path(ENTRY.url)
shipped = pytest.mark.skipif(
    not (FOLDER / "model.safetensors").is_file(),
    reason=f"the packaged model folder {FOLDER} is absent in this checkout (build it with "
    "benchmarks/open_suite/ship_open_model.py CHECKPOINT --out src/kikimimi/weights/open-m2d-tiny)",
)


@pytest.fixture(autouse=True)
def offline_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KIKIMIMI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KIKIMIMI_OFFLINE", "1")
    monkeypatch.setattr(registry, "_registered", {})


def _sine(seconds: float = 2.5, hz: float = 440.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# ------------------------------------------------------------------------------------ the shipped folder
@shipped
def test_shipped_model_loads_by_name_and_embeds_a_sine_with_documented_shapes():
    model = kikimimi.load(NAME)
    assert model.sample_rate == ENTRY.sample_rate == 16000
    assert model.embedding_dim == ENTRY.embedding_dim == 960  # Fg (80 / 16) x 192
    assert kikimimi.load("kikimimi-open-m2d-tiny").embedding_dim == 960  # the name is an alias
    wave = _sine(2.5)
    clip = model.embed(wave, 16000)
    assert clip.shape == (960,) and clip.dtype == np.float32 and np.isfinite(clip).all()
    frames, stamps = model.embed_frames(wave[None], 16000)
    # 251 log-mel frames → padded to whole 16-frame patches → chunks of 208 + 48 frames → 13 + 3 time patches
    assert frames.shape == (1, 16, 960) and stamps.shape == (1, 16)
    np.testing.assert_allclose(frames[0].mean(0), clip, atol=1e-5)
    assert np.all(np.diff(stamps[0]) > 0) and stamps[0, -1] < 2500


@shipped
def test_shipped_weights_match_every_recorded_sha256():
    digest = sha256_file(FOLDER / "model.safetensors")
    assert packaged_sha256(FOLDER) == digest == get_entry(NAME).sha256
    config = json.loads((FOLDER / "config.json").read_text())
    assert config["weights_sha256"] == digest and "Apache-2.0" in config["licence_note"]
    evidence = json.loads((FOLDER / "evidence.json").read_text())
    assert evidence["weights"]["sha256"] == digest and evidence["licence"] == "Apache-2.0"
    assert evidence["weights"]["size_bytes"] == (FOLDER / "model.safetensors").stat().st_size
    assert digest in (FOLDER / "README.md").read_text()


def _report_renderings(report: dict) -> tuple[set[str], set[float]]:
    """Every mean and std of ``report.json`` as a card prints them (percent, 1 or 2 decimals), and the means."""
    text, means = set(), set()
    for entry in report["tasks"].values():
        for result in entry["results"].values():
            for r in result["probes"].values():
                means.add(r["mean"])
                text |= {f"{100 * v:.{n}f}" for v in (r["mean"], r["std"]) for n in (1, 2)}
    return text, means


def _score_cells(card: str, tasks: set[str]) -> list[tuple[str, list[str]]]:
    """(row, score cells) of every Markdown table row about a task: the cells after ``probe`` that hold scores."""
    out, header = [], None
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            header = None
        elif cells[0] == "task":
            header = cells
        elif header and cells[0] in tasks:
            keep = [c for h, c in zip(header, cells, strict=True)
                    if h not in ("task", "metric", "probe", "report (SHA-256)", "model in report", "reproduce")]
            out.append((line, keep))
    return out


@shipped
def test_every_number_of_the_card_and_the_evidence_traces_to_the_evaluation_report():
    report = json.loads((FOLDER / "evaluation" / "report.json").read_text())
    evidence = json.loads((FOLDER / "evidence.json").read_text())
    assert evidence["evaluation"]["report"] == "evaluation/report.json"
    assert set(report["tasks"]) == set(evidence["evaluation"]["tasks"])
    assert report["probes"] == evidence["evaluation"]["probes"] and report["seeds"] == evidence["evaluation"]["seeds"]
    text, means = _report_renderings(report)
    card = (FOLDER / "README.md").read_text()
    rows = _score_cells(card, set(report["tasks"]))
    # the comparison with the baselines: one row per task and probe (and kikimimi card's own table, when used)
    assert len(rows) >= len(report["tasks"]) * len(report["probes"])
    for line, cells in rows:
        numbers = re.findall(r"\d+\.\d+", " ".join(cells))
        assert numbers and set(numbers) <= text, line
    for value in re.findall(r"^\s*value: (\S+)$", card, flags=re.M):  # model-index metadata (fractions)
        assert float(value) in means, value
    name, random = NAME, NAME + " (random init)"
    assert {name, random, "log-mel stats"} <= set(report["models"])
    for task, probes in evidence["evaluation"]["margins_points"].items():
        for probe, margin in probes.items():
            res = {m: r["probes"][probe]["mean"] for m, r in report["tasks"][task]["results"].items()}
            best = max(res["log-mel stats"], res[random])
            assert margin == pytest.approx(100 * (res[name] - best), abs=0.051), (task, probe)


@shipped
def test_training_json_is_card_facts_and_the_evidence_describes_data_and_compute():
    facts = json.loads((FOLDER / "training.json").read_text())
    card = pytest.importorskip("kikimimi.evaluation.model_card", reason="kikimimi card is not in this checkout")
    parsed = card.read_facts(FOLDER / "training.json")
    assert parsed.name == NAME and parsed.license == "apache-2.0" and parsed.datasets
    assert all(d.licence and d.notes for d in parsed.datasets)
    assert "ship_open_model.py" in parsed.command and "--recipe open-m2d-tiny" in parsed.command
    evidence = json.loads((FOLDER / "evidence.json").read_text())
    data, compute = evidence["data"], evidence["compute"]
    assert len(facts["datasets"]) == len(data["sources"])
    assert data["train_items"] == sum(s["train_items"] for s in data["sources"]) > 0
    assert sum(data["licences_train_hours"].values()) == pytest.approx(data["train_hours"], abs=0.01)
    assert compute["step"] == evidence["checkpoint"]["step"] > 0 and compute["train_wall_s"] > 0
    assert evidence["recipe"] == "open-m2d-tiny"


@shipped
def test_every_file_of_the_folder_is_package_data():
    """The wheel carries the folder: each file matches a ``kikimimi`` package-data pattern of pyproject.toml."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["kikimimi"]
    package = FOLDER.parents[1]
    files = [f.relative_to(package).as_posix() for f in FOLDER.rglob("*") if f.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)
                         for f in files), files


# ------------------------------------------------------------------------------------ the mechanism
def _stand_in(tmp_path: Path, monkeypatch, *, sums: bool = True) -> Path:
    """A tiny M2D folder packaged as ``open-m2d-tiny`` (the registry entry pointed at it)."""
    src = tmp_path / "m2d_vit_base-80x208p16x16" / "weights_enconly.pth"
    src.parent.mkdir(parents=True)
    torch.save(ol.m2d_encoder_state(embed_dim=32, depth=1, input_size=(80, 208)), src)
    folder = save_kikimimi(load_encoder(src), tmp_path / "weights" / NAME, licence_note="Apache-2.0 (test)")
    if sums:
        (folder / "SHA256SUMS").write_text(f"{sha256_file(folder / 'model.safetensors')}  model.safetensors\n")
    entry = dataclasses.replace(ENTRY, url=str(folder), embedding_dim=5 * 32)
    monkeypatch.setattr(registry, "PACKAGED_MODELS", (entry,))
    return folder


def test_a_packaged_folder_loads_by_name_with_no_network(tmp_path, monkeypatch):
    folder = _stand_in(tmp_path, monkeypatch)
    assert resolve_model_source(NAME) == folder
    model = kikimimi.load(NAME)
    assert model.embed(_sine(1.0), 16000).shape == (5 * 32,)
    assert get_entry("kikimimi-open-m2d-tiny").sha256 == sha256_file(folder / "model.safetensors")


def test_a_damaged_packaged_file_is_refused_on_load(tmp_path, monkeypatch):
    folder = _stand_in(tmp_path, monkeypatch)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(HashMismatchError, match="SHA256SUMS of the packaged model 'open-m2d-tiny'"):
        kikimimi.load(NAME)


def test_a_packaged_folder_without_sums_or_weights_is_refused(tmp_path, monkeypatch):
    folder = _stand_in(tmp_path, monkeypatch, sums=False)
    with pytest.raises(FetchError, match="has no SHA256SUMS"):
        kikimimi.load(NAME)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FetchError, match="not in this installation.*ship_open_model.py"):
        kikimimi.load(NAME)


def test_models_list_shows_apache_and_packaged(tmp_path, monkeypatch, capsys):
    _stand_in(tmp_path, monkeypatch)
    assert main(["models", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(NAME + " "))
    assert row.split()[-2:] == ["Apache-2.0", "packaged"] and " 160 " in row
    assert main(["models", "info", NAME]) == 0
    assert "no download" in capsys.readouterr().out
    (tmp_path / "weights" / NAME / "model.safetensors").unlink()
    assert main(["models", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(NAME + " "))
    assert row.split()[-1] == "missing"
