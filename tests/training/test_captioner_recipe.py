"""The captioner's training recipe (issue 33): the documented command with its DEFAULT settings converges on
templated captions of generated sounds (held-out captions name the right class well above chance), the prefix
vectors have the language model's own embedding scale, and a diverging run stops with one line naming ``--lr``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from caption_fakes import write_captions, write_tiny_encoder  # noqa: E402

from kikimimi.audio.synthetic import SOUND_CLASSES, make_dataset  # noqa: E402
from kikimimi.cli import main  # noqa: E402
from kikimimi.evaluation.caption_metrics import named_class  # noqa: E402
from kikimimi.inference.captioner import load_captioner  # noqa: E402
from kikimimi.methods.captioner import DivergenceGuard  # noqa: E402
from kikimimi.models.causal_lm import load_causal_lm  # noqa: E402
from kikimimi.models.prefix_mapper import MapperConfig, PrefixMapper, embedding_rms  # noqa: E402
from kikimimi.models.tiny_lm import write_tiny_lm  # noqa: E402
from kikimimi.training.captioner import CAPTIONER_DEFAULTS, DEFAULT_LR  # noqa: E402

#: the documented run length for `--llm tiny` is 1500 steps; 250 keep the test short (the recipe's warm-up and
#: schedule scale with the run; 250 steps gave 66 % held-out class words on two data seeds, chance 12.5 %)
STEPS = 250


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    labels = make_dataset(root / "audio", n_per_class=10, duration_s=1.0, seed=1)
    cap, _ = write_captions(labels)
    return {"root": root, "labels": labels, "captions": cap, "encoder": write_tiny_encoder(root / "enc")}


def _command(data, out, *extra: str) -> list[str]:
    return ["train-captioner", "--audio-model", str(data["encoder"]), "--captions", str(data["captions"]),
            "--out", str(out), "--run-name", "r", "--no-progress", "--device", "cpu", *extra]


def test_the_documented_defaults_caption_held_out_sounds_with_their_class(data, tmp_path):
    # only the run length and the LM are given: learning rate, warm-up, clipping, mapper sizes are the defaults
    assert main(_command(data, tmp_path, "--llm", "tiny", "--steps", str(STEPS))) == 0
    run = tmp_path / "r"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert max(r["lr"] for r in log) == pytest.approx(DEFAULT_LR["train_lm"], rel=0.05)  # the default was used
    config = json.loads((run / "config.json").read_text())
    assert config["grad_clip"] == CAPTIONER_DEFAULTS["grad_clip"] == 1.0 and config["warmup_steps"] == STEPS // 10
    assert config["mapper_config"]["out_scale"] > 0  # prefix scaled to the LM's embeddings
    captioner = load_captioner(run / "captioner")
    rows = [r for r in csv.DictReader(open(data["labels"], newline="")) if r["split"] != "train"]
    files = [str(data["labels"].parent / r["file_name"]) for r in rows]
    captions = captioner.caption(files, beam_size=1)
    phrases = {c: c.replace("_", " ") for c in SOUND_CLASSES}
    hits = np.mean([named_class(c, phrases) == r["label"] for r, c in zip(rows, captions, strict=True)])
    chance = 1 / len(SOUND_CLASSES)
    assert hits >= 2 * chance, list(zip([r["label"] for r in rows], captions, strict=True))
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]


def test_a_diverging_run_stops_with_one_line_naming_the_learning_rate(data, tmp_path, capsys):
    assert main(_command(data, tmp_path, "--llm", "tiny", "--steps", "200", "--lr", "30",
                         "--mapper-width", "32", "--prefix-len", "2")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "diverged" in err and "--lr" in err and "was 30" in err, err
    assert not (tmp_path / "r" / "captioner").exists()  # no captioner folder from a diverged run


def test_prefix_vectors_have_the_language_models_embedding_scale(tmp_path):
    lm, _ = load_causal_lm(str(write_tiny_lm(["the sound of a tone."], tmp_path / "lm")))
    rms = embedding_rms(lm)
    assert rms == pytest.approx(float(lm.get_input_embeddings().weight.detach().pow(2).mean().sqrt()))
    torch.manual_seed(0)
    cfg = MapperConfig(in_dim=8, lm_dim=64, prefix_len=3, width=16, depth=1, heads=2, out_scale=rms)
    mapper = PrefixMapper(cfg)
    with torch.no_grad():
        mapper.out_proj.weight.mul_(1000.0)  # a mapper whose raw output is huge still gives token-sized vectors
        prefix = mapper(torch.randn(4, 5, 8) * 50)
    per_vector = prefix.pow(2).mean(-1).sqrt()
    assert torch.allclose(per_vector, torch.full_like(per_vector, rms), rtol=1e-3)
    assert MapperConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # the float survives the folder
    old = MapperConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "out_scale"})
    assert old.out_scale == 0.0 and set(PrefixMapper(old).state_dict()) == set(mapper.state_dict())


def test_the_divergence_guard_trips_on_a_sustained_rise_only():
    guard = DivergenceGuard(patience=5)
    falling = [4.0 * 0.9**i for i in range(60)]  # down to ~0.01: noise near 0 must never trip it
    noisy = [v * (3.0 if i % 2 else 0.3) for i, v in enumerate(falling)]
    assert all(guard.update(i + 1, v) is None for i, v in enumerate(noisy))
    guard = DivergenceGuard(patience=5)
    assert all(guard.update(i + 1, v) is None for i, v in enumerate([8.0, 6.0, 5.0, 4.0, 3.5, 3.0, 2.8, 2.7]))
    tripped = [guard.update(9 + i, 12.0) for i in range(40)]
    first = next(i for i, m in enumerate(tripped) if m is not None)
    assert 5 <= first < 30 and "its best" in tripped[first]
