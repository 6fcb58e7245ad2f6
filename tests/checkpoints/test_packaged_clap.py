"""kikimimi's packaged open CLAP (``open-clap-tiny``, written by ``benchmarks/open_suite/ship_open_clap.py``): it loads
by name with no network, its weights match ``SHA256SUMS``, it scores a generated sound against text, every number of
its card comes from its evaluation report, and the commands that need a CLAP model use it when no ``-m`` is given.
The tests skip, saying so, only when this checkout has no packaged folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import kikimimi
from kikimimi.checkpoints.digest import sha256_file
from kikimimi.checkpoints.registry import PACKAGED_MODELS, default_packaged_model, get_entry, packaged_sha256
from kikimimi.cli import main

NAME = "open-clap-tiny"
ENTRY = next(e for e in PACKAGED_MODELS if e.name == NAME)
FOLDER = Path(ENTRY.url)
pytestmark = [pytest.mark.skipif(
    not (FOLDER / "model.safetensors").is_file(),
    reason=f"the packaged model folder {FOLDER} is absent in this checkout (build it with "
    "benchmarks/open_suite/ship_open_clap.py RUN --out src/kikimimi/weights/open-clap-tiny)",
), pytest.mark.usefixtures("offline_packaged")]


def _tone(path: Path, hz: float, seconds: float = 2.0, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)
    return path


def test_loads_by_name_and_scores_audio_against_text(tmp_path):
    clap = kikimimi.load_clap(NAME)
    assert kikimimi.load_clap("kikimimi-open-clap-tiny").audio.embedding_dim == clap.audio.embedding_dim
    audio = np.asarray(clap.encode_audio([str(_tone(tmp_path / "a.wav", 440.0))]))
    text = np.asarray(clap.encode_text(["a drum hit", "a woman speaks English over a telephone line"]))
    assert audio.shape[0] == 1 and text.shape[0] == 2 and audio.shape[1] == text.shape[1]
    scores = np.asarray(clap.similarity(audio, text))
    assert scores.shape == (1, 2) and np.isfinite(scores).all()


def test_weights_match_every_recorded_sha256():
    digest = sha256_file(FOLDER / "model.safetensors")
    assert packaged_sha256(FOLDER) == digest == get_entry(NAME).sha256
    config = json.loads((FOLDER / "config.json").read_text())
    assert config["weights_sha256"] == digest and "Apache-2.0" in config["licence_note"]
    facts = json.loads((FOLDER / "training.json").read_text())
    assert facts["weights"]["sha256"] == digest and digest in (FOLDER / "README.md").read_text()
    assert facts["data"]["train_hours"] > 1 and facts["compute"]["step"] > 0


def test_every_number_of_the_card_comes_from_the_evaluation_report():
    report = json.loads((FOLDER / "evaluation" / "open_clap_eval.json").read_text())
    ours, chance = report["models"][0], report["chance"]
    values = [v["accuracy"] for v in ours["zero_shot"].values()] + list(chance["zero_shot"].values())
    for side in (ours["retrieval"], chance["retrieval"]):
        values += [side[d][k] for d in ("text_to_audio", "audio_to_text") for k in ("R@1", "R@10", "mAP@10")]
    printed = {f"{100 * v:.1f}" for v in values}
    card = (FOLDER / "README.md").read_text()
    table = [line for line in card.splitlines() if line.startswith("| zero-shot") or "R@" in line or "mAP" in line]
    assert len(table) == len(ours["zero_shot"]) + 6
    for line in table:
        numbers = re.findall(r"\d+\.\d+", line)
        assert len(numbers) == 2 and set(numbers) <= printed, line


def test_commands_use_it_when_no_model_is_given(tmp_path, capsys):
    assert default_packaged_model("clap") == NAME
    folder = tmp_path / "sounds"
    folder.mkdir()
    _tone(folder / "low.wav", 220.0)
    _tone(folder / "high.wav", 1760.0)
    assert main(["zeroshot", str(folder), "--labels", "a drum hit,speech", "--json"]) == 0
    out = capsys.readouterr()
    assert f"using kikimimi's packaged open model '{NAME}'" in out.err
    assert {Path(r["file"]).name for r in json.loads(out.out)["results"]} == {"low.wav", "high.wav"}
    index = tmp_path / "index"
    assert main(["index", str(folder), "-o", str(index)]) == 0
    assert NAME in capsys.readouterr().err
    manifest = json.loads((index / "manifest.json").read_text())
    assert NAME in json.dumps(manifest)
