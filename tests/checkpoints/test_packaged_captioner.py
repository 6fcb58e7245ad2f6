"""kikimimi's packaged open captioner (``open-captioner-tiny``, written by
``benchmarks/open_suite/ship_open_captioner.py``): it loads by name with no network, every file its ``SHA256SUMS``
lists matches (and a damaged one is refused), it reproduces a known caption of a generated sound, and every number of
its card's evaluation table comes from its evaluation report. The tests skip, saying so, only when this checkout has
no packaged folder."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import kikimimi
from kikimimi.checkpoints import registry
from kikimimi.checkpoints.digest import sha256_file
from kikimimi.checkpoints.hub import HashMismatchError
from kikimimi.checkpoints.registry import PACKAGED_MODELS, default_packaged_model, get_entry, packaged_sums

NAME = "open-captioner-tiny"
ENTRY = next(e for e in PACKAGED_MODELS if e.name == NAME)
FOLDER = Path(ENTRY.url)
pytestmark = [pytest.mark.skipif(
    not (FOLDER / "captioner.json").is_file(),
    reason=f"the packaged captioner folder {FOLDER} is absent in this checkout (build it with "
    "benchmarks/open_suite/ship_open_captioner.py RUN --out src/kikimimi/weights/open-captioner-tiny)",
), pytest.mark.usefixtures("offline_packaged")]

#: the caption of :func:`_known_input` (beam 3, float32 encoder), recorded when the folder was shipped
KNOWN_CAPTION = "a short sound from hedgewars"


def _known_input(rate: int = 16000) -> np.ndarray:
    """2 s: a 440 Hz tone with a decaying envelope every half second (float32, ``rate`` Hz)."""
    t = np.arange(2 * rate) / rate
    return (0.4 * np.sin(2 * np.pi * 440.0 * t) * np.exp(-6.0 * (t % 0.5))).astype(np.float32)


def test_loads_by_name_and_reproduces_a_known_caption():
    captioner = kikimimi.load_captioner(NAME)
    assert captioner.config["audio_model"] == "open-clap-tiny"  # the packaged encoder, by name
    assert captioner.caption(_known_input(), sample_rate=16000, beam_size=3) == KNOWN_CAPTION
    alias = kikimimi.load_captioner("kikimimi-open-captioner-tiny")
    assert alias.caption(_known_input(), sample_rate=16000, beam_size=3) == KNOWN_CAPTION
    assert default_packaged_model("captioner") == NAME


def test_every_listed_file_matches_its_sha256_and_the_card():
    sums = packaged_sums(FOLDER)
    assert {"model.safetensors", "captioner.json", "lm/model.safetensors", "lm/tokenizer.json"} <= set(sums)
    assert get_entry(NAME).sha256 == sums["model.safetensors"]
    card = (FOLDER / "README.md").read_text()
    facts = json.loads((FOLDER / "training.json").read_text())
    for name, digest in sums.items():
        assert sha256_file(FOLDER / name) == digest and digest in card, name
    assert facts["weights"]["sha256"] == sums and "Apache-2.0" in card
    size = sum(f.stat().st_size for f in FOLDER.rglob("*") if f.is_file())
    assert size <= 15 * 2**20 and facts["data"]["train_hours"] > 1 and facts["compute"]["step"] > 0


def test_a_damaged_language_model_is_refused_on_load(tmp_path, monkeypatch):
    copy = shutil.copytree(FOLDER, tmp_path / NAME)
    monkeypatch.setattr(registry, "PACKAGED_MODELS", (dataclasses.replace(ENTRY, url=str(copy)),))
    weights = copy / "lm" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(HashMismatchError, match=f"SHA256SUMS of the packaged model '{NAME}'"):
        kikimimi.load_captioner(NAME)


def test_every_number_of_the_card_comes_from_the_evaluation_report():
    report = json.loads((FOLDER / "evaluation" / "open_captioner_eval.json").read_text())
    rows = report["class_words"]
    card = (FOLDER / "README.md").read_text()
    for task, k in rows.items():
        line = next(line for line in card.splitlines() if line.startswith(f"| {task} | {k['n']} |"))
        numbers = re.findall(r"\d+\.\d+", line)
        assert numbers == [f"{100 * k[c]:.1f}" for c in ("captioner", "nearest_neighbour", "chance")], line
    assert report["n_test"] == sum(k["n"] for k in rows.values()) > 1000


def test_loading_the_captioner_as_an_encoder_names_the_right_loader(offline_packaged):
    import kikimimi
    from kikimimi.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="is a captioner, not an audio encoder: load it with "
                                              "kikimimi.load_captioner"):
        kikimimi.load("open-captioner-tiny")
