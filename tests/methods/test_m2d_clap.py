"""M2D-CLAP (kikimimi.methods.m2d_clap) and the caption-aware dataset (kikimimi.data.caption_pairs).

The text side uses a deterministic stand-in of our own (a fixed random vector per word, averaged), so the
tests need no text model; the real encoders live in kikimimi.models.text.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kikimimi.data.caption_pairs import CaptionCropDataset, filter_captioned, match_caption_keys
from kikimimi.data.corpus import Corpus, CropDataset
from kikimimi.features.normstats import NormStats
from kikimimi.methods import build_method
from kikimimi.methods.clap import LOGIT_SCALE_MAX
from kikimimi.methods.m2d_clap import M2DCLAP
from kikimimi.training.trainer import TrainConfig, Trainer, load_training_checkpoint

TINY_INPUT = (80, 64)  # 5 x 4 patches of 16x16


# ------------------------------------------------------------------------------------------ fakes
def word_vector(word: str, dim: int) -> np.ndarray:
    """A fixed random unit-variance vector per (lower-cased, punctuation-stripped) word."""
    seed = zlib.crc32(word.lower().strip(".,!?").encode())
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def bag_of_words(text: str, dim: int) -> np.ndarray:
    """Mean of the word vectors of ``text`` → ``[dim]`` (the deterministic stand-in text encoder)."""
    words = [w for w in text.replace("_", " ").split() if w.strip(".,!?")]
    return np.mean([word_vector(w, dim) for w in words], axis=0).astype(np.float32)


class WordBagEncoder(nn.Module):
    """Trainable TextEncoder stand-in: ``forward(texts) -> [N, dim]`` = mean of learned word embeddings."""

    def __init__(self, dim: int = 24, vocab: int = 512, seed: int = 0) -> None:
        super().__init__()
        self.dim, self.name, self.vocab = dim, "wordbag", vocab
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.EmbeddingBag(vocab, dim, mode="mean")
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(vocab, dim, generator=g))
        self.proj = nn.Linear(dim, dim)

    def _ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, offsets = [], []
        for t in texts:
            offsets.append(len(ids))
            ids += [zlib.crc32(w.lower().strip(".,").encode()) % self.vocab for w in t.split()] or [0]
        return torch.tensor(ids), torch.tensor(offsets)

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids, offsets = self._ids(list(texts))
        return self.proj(self.embed(ids, offsets))

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        return self.forward(texts)


def write_lms_cache(root: Path, clips: dict[str, np.ndarray]) -> Corpus:
    """``name.npy`` log-mels + manifest/prep.json (a prep-cache corpus)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, lms in clips.items():
        np.save(root / f"{name}.npy", lms.astype(np.float32))
    (root / "manifest.csv").write_text("file_name\n" + "".join(f"{n}.npy\n" for n in clips))
    (root / "prep.json").write_text(json.dumps({"preset": "m2d-16k"}))
    return Corpus("cache", [root / f"{n}.npy" for n in clips], "m2d-16k", [str(root)])


def random_corpus(root: Path, n: int = 8, frames: int = 72, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    clips = {f"clip{i}": rng.normal(-5.0, 2.0, size=(80, frames + i)) for i in range(n)}
    return write_lms_cache(root, clips)


def random_embeddings(keys: list[str], dim: int = 24, per_key: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((per_key, dim)).astype(np.float16) for k in keys}


def _caption_dataset(root: Path, dim: int = 24, seed: int = 7) -> CaptionCropDataset:
    corpus = random_corpus(root / "cache")
    base = CropDataset(corpus, TINY_INPUT[1], norm_stats=NormStats(-5.0, 2.0), seed=seed)
    return CaptionCropDataset(base, embeddings=random_embeddings([f"clip{i}" for i in range(8)], dim))


def _tiny(text_dim: int | None = 24, seed: int = 0, **kw) -> M2DCLAP:
    torch.manual_seed(seed)
    return M2DCLAP("tiny", input_size=TINY_INPUT, text_dim=text_dim, **kw)


def _batch(b: int = 4, dt: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"lms": torch.randn(b, *TINY_INPUT, generator=g), "text_emb": torch.randn(b, dt, generator=g)}


# ------------------------------------------------------------------------------------------ dataset
def test_caption_dataset_items_are_deterministic_and_paired(tmp_path) -> None:
    ds = _caption_dataset(tmp_path)
    item = ds[(0, 3)]
    assert item["lms"].shape == (80, 64)
    assert item["text_emb"].shape == (24,) and item["text_emb"].dtype == torch.float32
    # the embedding is one of the file's captions, chosen by the item's own seeded generator
    rows = ds.embeddings["clip3"].astype(np.float32)
    assert any(np.allclose(item["text_emb"].numpy(), r) for r in rows)
    again = _caption_dataset(tmp_path / "other")  # a fresh object over identical files
    assert torch.equal(again[(0, 3)]["text_emb"], item["text_emb"])
    assert torch.equal(again[(0, 3)]["lms"], item["lms"])
    picks = {tuple(ds[(e, 3)]["text_emb"].numpy().round(3)) for e in range(12)}
    assert len(picks) > 1  # different epochs draw different captions


def test_missing_captions_error_or_skip(tmp_path) -> None:
    corpus = random_corpus(tmp_path / "cache", n=5)
    have = ["clip0", "clip1.npy", "clip3"]  # stem, relative name and stem keys all match
    assert match_caption_keys(corpus, have) == ["clip0", "clip1.npy", None, "clip3", None]
    with pytest.raises(ValueError, match=r"2 of 5 training files have no caption") as err:
        filter_captioned(corpus, have, "error", source="caps.csv")
    assert "clip2.npy" in str(err.value) and "clip4.npy" in str(err.value) and "caps.csv" in str(err.value)
    with pytest.warns(UserWarning, match="skipping 2 of 5"):
        kept, keys = filter_captioned(corpus, have, "skip")
    assert [p.name for p in kept.files] == ["clip0.npy", "clip1.npy", "clip3.npy"] and keys == have
    base = CropDataset(corpus, 64, norm_stats=NormStats(-5.0, 2.0))
    with pytest.raises(ValueError, match="no caption"):
        CaptionCropDataset(base, embeddings=random_embeddings(have))


# ------------------------------------------------------------------------------------------ method
def test_forward_outputs_and_text_projection() -> None:
    model = _tiny(text_dim=24)
    out = model(_batch())
    assert set(out) >= {"loss", "loss_m2d", "loss_clap", "logit_scale"}
    assert torch.allclose(out["loss"].detach(), out["loss_m2d"] + 0.01 * out["loss_clap"])
    assert float(out["logit_scale"]) == pytest.approx(math.log(1 / 0.07), abs=1e-6)
    assert isinstance(model.text_proj, nn.Linear) and model.text_proj.in_features == 24
    assert model.audio_proj[0].in_features == 192  # encoder width for the tiny size
    out["loss"].backward()
    assert model.audio_proj[0].weight.grad is not None and model.logit_scale.grad is not None
    assert model.text_proj.weight.grad is not None
    same = _tiny(text_dim=None)
    assert same.text_proj is None and same.text_dim == 192
    with pytest.raises(KeyError, match="text_emb"):
        model({"lms": _batch()["lms"]})
    with pytest.raises(ValueError, match="text_dim"):
        model(_batch(dt=10))


def test_tiny_m2d_clap_loss_decreases_and_scale_is_clamped() -> None:
    model = _tiny(clap_weight=1.0, ema_taus=(0.99, 0.999))
    batch = _batch(b=6)
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-3)
    losses, clap = [], []
    for step in range(1, 11):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.on_after_step(step, 10)
        losses.append(float(out["loss"].detach()))
        clap.append(float(out["loss_clap"]))
    assert losses[-1] < losses[0] and clap[-1] < clap[0]
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    model.on_after_step(11, 11)
    assert float(model.logit_scale) == pytest.approx(LOGIT_SCALE_MAX)
    assert model.last_tau is not None  # the M2D EMA ran too


def test_export_uses_official_2024_names_and_loads_with_projectors(tmp_path) -> None:
    from kikimimi.checkpoints import load_encoder

    model = _tiny(text_dim=24)
    sd = model.export_official_state_dict()
    assert sd["logit_scale"].shape == ()
    for key in ("audio_proj.0.weight", "audio_proj.0.bias", "audio_proj.2.weight", "audio_proj.2.bias",
                "text_proj.weight", "text_proj.bias", "cls_token", "blocks.0.attn.qkv.weight", "norm_stats",
                "target_blocks.0.norm1.weight", "decoder_embed.weight", "mask_token"):  # fmt: skip
        assert key in sd, key
    assert not any(k.startswith("encoder.") for k in sd)
    assert "text_proj.weight" not in _tiny(text_dim=None).export_official_state_dict()

    folder = tmp_path / "m2d_clap_vit_tiny-80x64p16x16-261201"
    folder.mkdir()
    torch.save({"model": sd}, folder / "checkpoint-1.pth")
    bundle = load_encoder(folder / "checkpoint-1.pth")
    assert bundle.config["vit"]["input_size"] == [80, 64] and bundle.config["audio_proj"]["kind"] == "mlp"
    assert torch.equal(bundle.audio_proj[2].weight, sd["audio_proj.2.weight"])
    assert torch.equal(bundle.text_proj.weight, sd["text_proj.weight"])
    assert bundle.logit_scale == pytest.approx(float(sd["logit_scale"]))
    assert torch.equal(bundle.encoder.state_dict()["blocks.1.mlp.fc2.weight"], sd["blocks.1.mlp.fc2.weight"])
    # the same dict initialises a fresh M2D-CLAP (further pre-training); an M2D file keeps fresh CLAP parts
    other = _tiny(text_dim=24, seed=5)
    other.load_official_state_dict({"model": sd})
    assert torch.equal(other.audio_proj[0].weight, model.audio_proj[0].weight)
    m2d_only = {k: v for k, v in sd.items() if not k.startswith(("audio_proj", "text_proj", "logit_scale"))}
    third = _tiny(text_dim=24, seed=6)
    before = third.audio_proj[0].weight.clone()
    third.load_official_state_dict(m2d_only)
    assert torch.equal(third.audio_proj[0].weight, before)
    assert torch.equal(third.encoder.cls_token, model.encoder.cls_token)


def test_build_method_round_trip() -> None:
    model = _tiny(text_dim=24, clap_weight=0.5)
    cfg = model.config_dict()
    assert cfg["method"] == "m2d_clap" and cfg["clap_weight"] == 0.5 and cfg["text_dim"] == 24
    again = build_method("m2d_clap", **cfg)
    assert isinstance(again, M2DCLAP) and again.text_dim == 24 and again.clap_weight == 0.5
    assert set(again.state_dict()) == set(model.state_dict())
    stage1 = build_method("m2d2_stage1", **cfg)
    assert stage1.config_dict()["method"] == "m2d2_stage1"


# ------------------------------------------------------------------------------------------ resume
class KillableCLAP(M2DCLAP):
    kill_after_step: int | None = None

    def on_after_step(self, step: int, total_steps: int) -> None:
        super().on_after_step(step, total_steps)
        if self.kill_after_step is not None and step >= self.kill_after_step:
            raise RuntimeError("simulated kill")


def _resume_config(out: Path, **kw) -> TrainConfig:
    base = dict(method="m2d_clap", steps=5, batch_size=2, accum_iter=1, lr=1e-3, warmup_steps=1, amp="off",
                device="cpu", seed=5, log_every=1, out_dir=str(out), save_every=2)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_resume_gives_identical_next_losses(tmp_path) -> None:
    def method(seed: int) -> KillableCLAP:
        torch.manual_seed(seed)
        return KillableCLAP("tiny", input_size=TINY_INPUT, text_dim=24, clap_weight=1.0, ema_taus=(0.99, 0.999))

    full = Trainer(method(1), _caption_dataset(tmp_path / "a"), _resume_config(tmp_path / "full")).fit()
    killed = method(1)
    killed.kill_after_step = 3  # last checkpoint at step 2
    with pytest.raises(RuntimeError, match="simulated kill"):
        Trainer(killed, _caption_dataset(tmp_path / "b"), _resume_config(tmp_path / "part")).fit()
    resumed = Trainer(
        method(42), _caption_dataset(tmp_path / "c"), _resume_config(tmp_path / "part", resume=str(tmp_path / "part"))
    ).fit()
    assert sorted(resumed.losses) == [3, 4, 5]
    for s in (3, 4, 5):
        assert resumed.losses[s] == pytest.approx(full.losses[s], abs=1e-6, rel=0)
    a = load_training_checkpoint(tmp_path / "full" / "checkpoint-5.pth")["model"]
    b = load_training_checkpoint(tmp_path / "part" / "checkpoint-5.pth")["model"]
    assert torch.allclose(a["logit_scale"], b["logit_scale"])
    assert torch.allclose(a["audio_proj.0.weight"], b["audio_proj.0.weight"], atol=1e-6)


# ------------------------------------------------------------------------------------------ zero-shot
ZS_CLASSES = ("tone", "noise_burst", "clicks", "chirp")
ZS_TEMPLATES = ("The sound of {}.", "A recording of {}.", "{} sound")


def _zs_clips(n_per_class: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from kikimimi.audio.synthetic import make_sound
    from kikimimi.features.frontend import log_mel

    clips, labels = {}, {}
    for c in ZS_CLASSES:
        for i in range(n_per_class):
            rng = np.random.default_rng((seed, ZS_CLASSES.index(c), i))
            clips[f"{c}_{i}"] = log_mel(make_sound(c, 0.7, 16000, rng), "m2d-16k")
            labels[f"{c}_{i}"] = c
    return clips, labels


def test_tiny_m2d_clap_zero_shot_beats_chance(tmp_path) -> None:
    """Tiny M2D-CLAP on generated audio with templated captions → zero-shot well above chance.

    Test settings (documented): clap_weight 1.0 (not 0.01 — with ~100 steps the CLAP term must dominate),
    lr 1e-3, 100 steps of batch 16, EMA 0.99→0.999; 32-d frozen bag-of-words caption embeddings.
    """
    dim = 32
    train, labels = _zs_clips(10, seed=0)
    held, held_labels = _zs_clips(5, seed=1)
    all_train = np.concatenate([v for v in train.values()], axis=1)
    stats = NormStats(float(all_train.mean()), float(all_train.std()))
    corpus = write_lms_cache(tmp_path / "cache", train)
    captions = {k: np.stack([bag_of_words(t.format(labels[k].replace("_", " ")), dim) for t in ZS_TEMPLATES])
                for k in train}  # fmt: skip
    base = CropDataset(corpus, TINY_INPUT[1], norm_stats=stats, seed=3)
    ds = CaptionCropDataset(base, embeddings=captions)
    torch.manual_seed(0)
    method = M2DCLAP("tiny", input_size=TINY_INPUT, text_dim=dim, clap_weight=1.0, ema_taus=(0.99, 0.999))
    cfg = TrainConfig(method="m2d_clap", steps=100, batch_size=16, lr=1e-3, warmup_steps=5, amp="off",
                      device="cpu", seed=3, log_every=50, out_dir=str(tmp_path / "run"))  # fmt: skip
    result = Trainer(method, ds, cfg).fit()
    assert result.step == 100

    method.eval()
    prompts = [f"{c.replace('_', ' ')} can be heard" for c in ZS_CLASSES]
    text = method.text_embedding(torch.from_numpy(np.stack([bag_of_words(p, dim) for p in prompts])))
    lms = torch.from_numpy(np.stack([stats.normalize(v[:, :64]) for v in held.values()])).float()
    audio = method.zero_shot_audio(lms)
    sims = torch.nn.functional.normalize(audio, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).t()
    pred = sims.argmax(dim=1).numpy()
    truth = np.array([ZS_CLASSES.index(held_labels[k]) for k in held])
    accuracy = float((pred == truth).mean())
    assert accuracy >= 0.6, f"zero-shot accuracy {accuracy:.2f} (chance 0.25); predictions {pred.tolist()}"
