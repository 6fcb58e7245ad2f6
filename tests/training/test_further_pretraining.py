"""Further pre-training from an official full training checkpoint (`kikimimi pretrain --init-from`)."""

from __future__ import annotations

import argparse

import official_layouts as ol
import pytest
import torch

from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main


@pytest.mark.parametrize("taus", [None, (0.9, 0.95)])
def test_init_from_official_full_checkpoint(tmp_path, taus):
    folder = tmp_path / "m2d_vit_base-80x64p16x16-221006-mr7"
    folder.mkdir()
    state = ol.m2d_full_state(embed_dim=192, depth=6, input_size=(80, 64), decoder_dim=128, decoder_depth=2)
    official = {"model": state, "epoch": 300, "args": argparse.Namespace(blr=3e-4, mask_ratio=0.7),
                "optimizer": ol.optimizer_state(state)}
    torch.save(official, folder / "checkpoint-300.pth")
    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp"))
    out = tmp_path / "runs"
    argv = ["pretrain", "--method", "m2d", "--size", "tiny", "--input-frames", "64", "--data",
            str(tmp_path / "audio"), "--out", str(out), "--steps", "1", "--batch-size", "2", "--device", "cpu",
            "--norm-samples", "4", "--min-epoch-size", "2", "--no-progress", "--save-every", "1",
            "--blr", "1e-9", "--warmup-steps", "0", "--init-from", str(folder / "checkpoint-300.pth")]
    if taus:
        argv += ["--ema-taus", *map(str, taus)]
    assert main(argv) == 0
    run = next(out.iterdir())
    written = torch.load(run / "checkpoint-1.pth", map_location="cpu", weights_only=True)["model"]
    # online encoder, predictor and target all start from the file (one tiny-lr step barely moves them)
    keys = ["blocks.0.attn.qkv.weight", "decoder_blocks.1.mlp.fc2.weight", "decoder_pred.weight", "cls_token"]
    for key in keys + ([] if taus else ["target_blocks.5.norm1.weight"]):
        assert torch.allclose(written[key], state[key], atol=1e-4), key
    # and the target moved towards the online network by the EMA rule, not by the optimiser
    tau = taus[0] if taus else 0.99995
    expected = tau * state["target_blocks.0.mlp.fc1.weight"] + (1 - tau) * written["blocks.0.mlp.fc1.weight"]
    assert torch.allclose(written["target_blocks.0.mlp.fc1.weight"], expected, atol=1e-6)


def test_init_from_an_encoder_only_folder_continues_it_as_m2d_x(tmp_path):
    """`--init-from` a kikimimi folder (like the packaged open-m2d-tiny): online encoder and target start from it."""
    from kikimimi.checkpoints import load_encoder

    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp"))
    common = ["pretrain", "--method", "m2d", "--size", "tiny", "--input-frames", "64", "--data",
              str(tmp_path / "audio"), "--steps", "1", "--batch-size", "2", "--device", "cpu", "--norm-samples", "4",
              "--min-epoch-size", "2", "--no-progress", "--save-every", "1", "--warmup-steps", "0"]
    assert main([*common, "--out", str(tmp_path / "first"), "--blr", "1e-3"]) == 0
    released = next((tmp_path / "first").iterdir()) / "kikimimi"  # the encoder-only folder a run exports
    assert main([*common, "--out", str(tmp_path / "further"), "--blr", "1e-9", "--init-from", str(released)]) == 0
    written = torch.load(next((tmp_path / "further").iterdir()) / "checkpoint-1.pth", map_location="cpu",
                         weights_only=True)["model"]
    encoder = load_encoder(released).encoder.state_dict()
    for key in ("blocks.0.attn.qkv.weight", "blocks.5.mlp.fc2.weight", "pos_embed"):
        assert torch.allclose(written[key], encoder[key], atol=1e-4), key
    for key in ("blocks.0.attn.qkv.weight", "blocks.5.mlp.fc2.weight"):
        assert torch.allclose(written["target_" + key], encoder[key], atol=1e-4), key


def test_a_missing_init_from_path_is_one_line_and_creates_nothing(tmp_path, capsys):
    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone",))
    out = tmp_path / "runs"
    assert main(["pretrain", "--method", "m2d", "--data", str(tmp_path / "audio"), "--out", str(out),
                 "--init-from", str(tmp_path / "no-such.pth")]) == 2
    assert f"no such file or folder: {tmp_path / 'no-such.pth'}" in capsys.readouterr().err
    assert not out.exists()
