"""Fault suite: model files validated before they are built, weights checksummed (issue 25, finding 7 and
item 7), and the weak findings on pickled language models and full disks during ``pretrain``."""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
import warnings

import pytest
import torch

from kikimimi.checkpoints import CheckpointError, load_encoder, save_kikimimi
from kikimimi.checkpoints.ours import load_kikimimi


@pytest.fixture(scope="module")
def kikimimi_folder(tiny_m2d_file, tmp_path_factory):
    """A tiny kikimimi folder (ViT 64-d, 2 blocks) written by save_kikimimi."""
    return save_kikimimi(load_encoder(tiny_m2d_file), tmp_path_factory.mktemp("k") / "tiny")


def _copy_with_config(src, dst, edit):
    dst.mkdir()
    (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    meta = json.loads((src / "config.json").read_text())
    edit(meta)
    (dst / "config.json").write_text(json.dumps(meta))
    return dst


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_config_depth_200000_refused_before_build(kikimimi_folder, tmp_path, fault_report):
    folder = _copy_with_config(kikimimi_folder, tmp_path / "edited", lambda m: m["config"]["vit"].update(depth=200000))
    rss_before, start = _max_rss_mb(), time.monotonic()
    with pytest.raises(CheckpointError) as info:
        load_encoder(folder)
    elapsed, grown = time.monotonic() - start, _max_rss_mb() - rss_before
    message = str(info.value)
    assert "config.json" in message and "vit.depth = 200000" in message and "\n" not in message
    assert elapsed < 2.0, elapsed
    assert grown < 100, f"peak RSS grew {grown:.0f} MB"
    fault_report("load", depth_200000_seconds=round(elapsed, 2), rss_growth_mb=round(grown))


@pytest.mark.parametrize("field, value, named", [
    ("embed_dim", 10**7, "vit.embed_dim"),
    ("depth", -3, "vit.depth"),
    ("depth", 100, "vit.depth = 100 does not match model.safetensors"),  # in range, but the file has 2 blocks
    ("embed_dim", 256, "vit.embed_dim = 256 does not match"),
    ("patch_size", [16, 100000], "vit.patch_size"),
    ("patch_size", [0, 16], "vit.patch_size[0]"),
    ("input_size", [80, 10**9], "vit.input_size[1]"),
    ("input_size", [80, 1216], "vit.input_size"),  # a positional grid twice the file's
    ("mlp_ratio", 1e6, "vit.mlp_ratio"),
    ("num_heads", "12", "vit.num_heads"),
    ("vit", None, "field vit"),
])
def test_edited_config_refused_with_the_field(kikimimi_folder, tmp_path, field, value, named):
    def edit(meta):
        if field == "vit":
            meta["config"]["vit"] = value
        else:
            meta["config"]["vit"][field] = value

    folder = _copy_with_config(kikimimi_folder, tmp_path / "edited", edit)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="config.json") as info:
        load_kikimimi(folder)
    assert named in str(info.value) and time.monotonic() - start < 2.0


@pytest.mark.parametrize("edit, named", [
    (lambda m: m["config"].update(head={"in_dim": 10**9, "n_classes": 527}), "head.in_dim"),
    (lambda m: m["config"].update(head={"in_dim": 320, "n_classes": 527}), "does not match"),  # no head tensors
    (lambda m: m["config"].update(audio_proj={"kind": "semantic", "dim": 64, "depth": 10**6, "mlp_ratio": 1.0}),
     "audio_proj.depth"),
    (lambda m: m["frontend"].update(n_fft=10**9), "frontend.n_fft"),
    (lambda m: m.pop("norm_stats"), "norm_stats"),
])
def test_edited_extras_refused(kikimimi_folder, tmp_path, edit, named):
    folder = _copy_with_config(kikimimi_folder, tmp_path / "edited", edit)
    with pytest.raises(CheckpointError, match="config.json|model.safetensors") as info:
        load_kikimimi(folder)
    assert named in str(info.value)


def test_official_file_with_block_200000_refused_before_build(tmp_path, fault_report):
    import official_layouts as ol

    state = ol.m2d_encoder_state(embed_dim=32, depth=1)
    state["blocks.199999.norm1.weight"] = torch.ones(32)  # one stray key claims 200,000 blocks
    path = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly" / "w.pth"
    path.parent.mkdir()
    torch.save(state, path)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="vit.depth = 200000") as info:
        load_encoder(path)
    assert str(path) in str(info.value) and time.monotonic() - start < 2.0
    fault_report("load", official_stray_block_refused=1)


def test_flipped_weight_byte_refused(kikimimi_folder, tmp_path, caplog, fault_report):
    meta = json.loads((kikimimi_folder / "config.json").read_text())
    assert len(meta["weights_sha256"]) == 64 and meta["weights_size"] > 0
    folder = _copy_with_config(kikimimi_folder, tmp_path / "flipped", lambda m: None)
    weights = folder / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x01  # one bit of one weight: the header and sizes still agree
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch") as info:
        load_encoder(folder)
    message = str(info.value)
    assert str(weights) in message and "download it again" in message and "\n" not in message
    # the intact copy loads; a folder written before checksums were recorded loads too, with a debug line
    assert load_encoder(kikimimi_folder).encoder is not None
    old = _copy_with_config(kikimimi_folder, tmp_path / "old",
                            lambda m: (m.pop("weights_sha256"), m.pop("weights_size")))
    with caplog.at_level(logging.DEBUG, logger="kikimimi.checkpoints.ours"):
        assert load_encoder(old).encoder is not None
    assert "checksum not verified" in caplog.text
    fault_report("load", flipped_byte_refused=1, unchecksummed_old_folder_loaded=1)


def test_weights_checksum_is_hashed_once_per_process(kikimimi_folder, monkeypatch):
    from kikimimi.checkpoints import digest

    load_kikimimi(kikimimi_folder)
    calls = []
    monkeypatch.setattr(digest, "sha256_file", lambda p, *a: calls.append(p) or "x")
    load_kikimimi(kikimimi_folder)  # same path, size and mtime: the digest is reused
    assert calls == []


# ------------------------------------------------------------------------------------ weak findings
def test_pickled_language_model_one_line(tmp_path, fault_report):
    """A text-encoder folder whose weights are a hostile pickle: one line naming the folder, no code run."""
    tr = pytest.importorskip("transformers")
    import os
    import pickle

    from kikimimi.models.text import TextEncoderError
    from kikimimi.models.text_loading import load_text_encoder

    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]))
    tr.BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=8).save_pretrained(folder)
    tr.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"embeddings.word_embeddings.weight": Payload()}))
    with warnings.catch_warnings(), pytest.raises(TextEncoderError) as info:
        warnings.simplefilter("ignore")  # torch's note on the pickle protocol
        load_text_encoder(f"bert:{folder}")
    message = str(info.value)
    assert str(folder) in message and "pickle" in message and "\n" not in message
    assert not marker.exists()
    fault_report("text encoder", pickled_model_one_line=1, code_run=0)


def test_checkpoint_disk_full_before_and_while_writing(tmp_path, monkeypatch):
    import errno

    from kikimimi.training import checkpointing as C

    obj = {"model": {"w": torch.zeros(1000)}}
    previous = tmp_path / "checkpoint-2.pth"
    torch.save(obj, previous)
    before = previous.read_bytes()
    usage = type("U", (), {"free": 1_000_000})()
    monkeypatch.setattr(C.shutil, "disk_usage", lambda p: usage)  # 1 MB free: refused before writing
    with pytest.raises(C.CheckpointDiskFullError, match=r"disk full while writing .*checkpoint-4.pth \(1 MB free"):
        C.save_checkpoint_file(obj, tmp_path / "checkpoint-4.pth")
    monkeypatch.undo()

    def enospc(o, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(C, "atomic_torch_save", enospc)
    with pytest.raises(C.CheckpointDiskFullError, match="disk full while writing"):
        C.save_checkpoint_file(obj, tmp_path / "checkpoint-4.pth")
    assert previous.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2.pth"]


def test_pretrain_disk_full_one_line(tmp_path, monkeypatch, capsys, fault_report):
    """`pretrain` on a disk that fills up at its second checkpoint: exit 1, one line, the first intact."""
    import soundfile as sf

    from kikimimi.cli import console_main

    from .inputs import tone

    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        sf.write(data / f"t{i}.wav", tone(1.0, 300 + 100 * i), 16000)
    real_save, real_usage, state = torch.save, shutil.disk_usage, {"saves": 0, "full": False}

    def filling_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "trainer_state" in obj:  # a training checkpoint
            state["saves"] += 1
            if state["saves"] >= 2:
                state["full"] = True  # what torch.save says when its write fails on a full disk
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, f, *args, **kwargs)

    def usage(path):
        real = real_usage(path)
        return type("U", (), {"free": 3_000_000 if state["full"] else real.free})()

    monkeypatch.setattr(torch, "save", filling_save)
    monkeypatch.setattr(shutil, "disk_usage", usage)
    run = tmp_path / "runs" / "r"
    code = console_main(["pretrain", "--method", "byola", "--byola-dim", "64", "--data", str(data), "--out",
                         str(tmp_path / "runs"), "--run-name", "r", "--steps", "4", "--batch-size", "4",
                         "--device", "cpu", "--norm-samples", "4", "--min-epoch-size", "8", "--save-every", "2",
                         "--no-progress", "--seed", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 1, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "disk full while writing" in errors[0] and "checkpoint-4.pth" in errors[0] and "3 MB free" in errors[0]
    first = run / "checkpoint-2.pth"
    assert torch.load(first, weights_only=True)["step"] == 2  # the previous checkpoint is intact
    assert not (run / "checkpoint-4.pth").exists()
    fault_report("pretrain", disk_full_one_line=1, previous_checkpoint_intact=1)
