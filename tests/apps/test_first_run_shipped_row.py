"""The first run's probe table gains kikimimi's packaged encoder (``open-m2d-tiny``) when the installation has it,
and says so in one line when it does not (a tiny stand-in folder plays the packaged one)."""

from __future__ import annotations

import dataclasses

import numpy as np
import official_layouts as ol
import pytest
import torch

from kikimimi.apps.first_run.pipeline import SHIPPED_ENCODER, shipped_encoder_specs
from kikimimi.checkpoints import load_encoder, registry, save_kikimimi
from kikimimi.checkpoints.digest import sha256_file


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("KIKIMIMI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KIKIMIMI_OFFLINE", "1")
    monkeypatch.setattr(registry, "_registered", {})


def _package_stand_in(tmp_path, monkeypatch):
    src = tmp_path / "m2d_vit_base-80x208p16x16" / "weights_enconly.pth"
    src.parent.mkdir(parents=True)
    torch.save(ol.m2d_encoder_state(embed_dim=32, depth=1, input_size=(80, 208)), src)
    folder = save_kikimimi(load_encoder(src), tmp_path / "weights" / SHIPPED_ENCODER)
    (folder / "SHA256SUMS").write_text(f"{sha256_file(folder / 'model.safetensors')}  model.safetensors\n")
    entry = next(e for e in registry.PACKAGED_MODELS if e.name == SHIPPED_ENCODER)
    monkeypatch.setattr(registry, "PACKAGED_MODELS", (dataclasses.replace(entry, url=str(folder)),))
    return folder


def test_the_packaged_encoder_is_one_more_probe_row(tmp_path, monkeypatch):
    _package_stand_in(tmp_path, monkeypatch)
    lines = []
    specs = shipped_encoder_specs(lines.append)
    assert [s.name for s in specs] == ["open-m2d-tiny (shipped, Apache-2.0)"] and lines == []
    assert specs[0].family == "m2d" and specs[0].sample_rate == 16000
    embed = specs[0].make(None)  # no per-task statistics for an M2D
    wave = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32)
    assert embed([wave], 16000).shape == (1, 5 * 32)


def test_without_the_packaged_folder_the_row_is_left_out_with_a_line(tmp_path, monkeypatch):
    folder = _package_stand_in(tmp_path, monkeypatch)
    (folder / "model.safetensors").unlink()
    lines = []
    assert shipped_encoder_specs(lines.append) == []
    assert lines == ["   the packaged encoder open-m2d-tiny is not in this installation: its row is left out"]
