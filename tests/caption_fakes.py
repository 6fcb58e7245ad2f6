"""Test helpers for the captioner tests: a tiny random Llama with a word-level tokenizer (built here with
transformers' LlamaConfig and a ``tokenizers`` WordLevel model), a tiny M2D encoder file and templated
captions of generated clips; a few optimiser steps on a random caption batch; a resume
from a run's earlier checkpoint; a hand-made caption example
for the metric tests."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import official_layouts as ol
import torch

TEMPLATE = "the sound of a {w}."
QUESTION = "What sound is this?"
#: a hand-made caption example (predictions and references per clip) for the metric and report tests
PRED = {"dog": "A dog barks loudly.", "rain": "rain falls on a roof", "car": "a car passes by", "bird": "birds sing"}
REFS = {
    "dog": ["A dog is barking.", "The dog barks loudly at night.", "a small dog barks"],
    "rain": ["Rain is falling on a tin roof.", "heavy rain on the roof"],
    "car": ["A car drives past.", "a vehicle passes by on a road", "traffic noise"],
    "bird": ["Birds are singing in the trees.", "birds chirp and sing"],
}


def words(label: str) -> str:
    return label.replace("_", " ")


def write_tiny_llama(folder: Path, texts: list[str], *, dim: int = 64, seed: int = 0) -> Path:
    """A 2-layer Llama (width ``dim``) with random weights and a lower-case word-level tokenizer of ``texts``."""
    import re

    import tokenizers
    from tokenizers import models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab_words = sorted({w for t in texts + ["Question: Answer: Describe this sound."]
                          for w in re.findall(r"\w+|[^\w\s]+", t.lower())})
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *vocab_words])}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                     eos_token="<eos>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0,
                      bos_token_id=2, eos_token_id=3, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


def write_tiny_encoder(folder: Path, seed: int = 0) -> Path:
    """A tiny M2D encoder file (ViT width 64, depth 2; 320-d frames) in the official layout."""
    path = folder / "m2d_vit_base-80x608p16x16-221006-mr7_enconly" / "w.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(ol.m2d_encoder_state(norm_stats=(-7.5, 4.0), embed_dim=64, depth=2), path)
    return path


def write_captions(labels_csv: Path, splits: tuple[str, ...] = ("train",)) -> tuple[Path, Path]:
    """``captions.csv`` (one templated caption per clip) and ``qa.csv`` (the label question) for ``splits``."""
    rows = [r for r in csv.DictReader(open(labels_csv, newline="")) if r["split"] in splits]
    cap, qa = labels_csv.parent / "captions.csv", labels_csv.parent / "qa.csv"
    with open(cap, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption"])
        w.writerows((r["file_name"], TEMPLATE.format(w=words(r["label"]))) for r in rows)
    with open(qa, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "question", "answer"])
        w.writerows((r["file_name"], QUESTION, f"A {words(r['label'])}.") for r in rows)
    return cap, qa


def train_steps(method: torch.nn.Module, optimiser: torch.optim.Optimizer, steps: int = 3) -> None:
    """``steps`` optimiser steps of a captioner method (8-d frames, token ids below 20) on one seeded random
    batch of 4: frames ``[4, 5, 8]``, token ids ``[4, 6]``, labels = the ids."""
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.randn(4, 5, 8, generator=g), "frame_mask": torch.ones(4, 5, dtype=torch.bool),
             "input_ids": torch.randint(4, 20, (4, 6), generator=g),
             "attention_mask": torch.ones(4, 6, dtype=torch.long)}
    batch["labels"] = batch["input_ids"].clone()
    method.train()
    for _ in range(steps):
        optimiser.zero_grad()
        method(batch)["loss"].backward()
        optimiser.step()


def resume_from_earlier_checkpoint(trained, data: dict, tmp_path: Path, steps: int, save_every: int):
    """Copy a finished captioner run, delete its final checkpoint (step ``steps``), resume it and check that the
    resumed steps are those after ``save_every`` with the same losses; returns the resumed training."""
    import pytest

    from kikimimi.training.captioner_run import train_captioner

    copy = tmp_path / "run"
    shutil.copytree(trained.run_dir, copy)
    (copy / f"checkpoint-{steps}.pth").unlink()
    resumed = train_captioner(data["encoder"], data["captions"], copy, qa=data["qa"], resume=True,
                              settings={"progress": False})
    assert sorted(resumed.losses) == list(range(save_every + 1, steps + 1))
    for step, loss in resumed.losses.items():
        assert loss == pytest.approx(trained.losses[step], rel=1e-5, abs=1e-6), step
    return resumed
