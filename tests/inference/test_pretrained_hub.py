"""``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for encoders, CLAP models and captioners, through the
local Hub server of ``tests/hub_server.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("huggingface_hub")

from hub_server import HubServer, hub_environment  # noqa: E402

import kikimimi  # noqa: E402
from kikimimi.checkpoints import CheckpointError  # noqa: E402
from kikimimi.inference.captioner import Captioner, save_captioner  # noqa: E402
from kikimimi.inference.clap import CLAPModel  # noqa: E402
from kikimimi.inference.encoder import AudioEncoder  # noqa: E402
from kikimimi.inference.pretrained import (  # noqa: E402
    folder_kind,
    from_pretrained,
    push_to_hub,
    save_pretrained,
)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = HubServer().start()
    hub_environment(monkeypatch, tmp_path, server)
    yield server
    server.stop()


def test_encoder_save_push_and_load_from_the_hub(hub, tmp_path, tiny_m2d_file, wav_factory):
    model = kikimimi.load(tiny_m2d_file, "cpu", precision="fp32")
    folder = save_pretrained(model, tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert folder_kind(folder) == "encoder"
    wav = wav_factory(duration_s=1.0)
    expected = from_pretrained(folder, device="cpu").embed(wav)
    plan = push_to_hub(model, "kiki/enc", token="hf_test")  # a model object: saved into a temporary folder
    assert [f.path_in_repo for f in plan.files] == ["config.json", "model.safetensors"]
    for source in ("hf://kiki/enc", "kiki/enc"):  # a bare owner/name that is no local path is a Hub repository
        loaded = from_pretrained(source, device="cpu")
        assert isinstance(loaded, AudioEncoder)
        np.testing.assert_allclose(loaded.embed(wav), expected, rtol=1e-5, atol=1e-6)


def test_clap_folder_loads_back_as_a_clap_model(hub, tmp_path, wav_factory):
    from clap_fakes import write_tiny_clap2024

    clap = kikimimi.load_clap(write_tiny_clap2024(tmp_path / "official"), device="cpu", precision="fp32")
    folder = save_pretrained(clap, tmp_path / "clap")
    assert folder_kind(folder) == "clap"
    push_to_hub(folder, "kiki/clap", token="hf_test")
    loaded = from_pretrained("hf://kiki/clap", device="cpu")
    assert isinstance(loaded, CLAPModel)
    wav = wav_factory(duration_s=1.0)
    np.testing.assert_allclose(np.asarray(loaded.encode_audio([wav])), np.asarray(clap.encode_audio([wav])),
                               rtol=1e-4, atol=1e-5)


def _tiny_captioner(tmp_path, encoder_path):
    from caption_fakes import write_tiny_llama
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from kikimimi.inference.captioner import load_audio_model
    from kikimimi.models.prefix_mapper import MapperConfig, PrefixMapper

    lm_dir = write_tiny_llama(tmp_path / "llama", ["a dog barks", "rain falls"])
    lm, tok = AutoModelForCausalLM.from_pretrained(lm_dir), PreTrainedTokenizerFast.from_pretrained(lm_dir)
    encoder = load_audio_model(encoder_path)
    torch.manual_seed(0)
    mapper = PrefixMapper(MapperConfig(in_dim=encoder.embedding_dim, lm_dim=64, width=16, depth=1, heads=2))
    return save_captioner(tmp_path / "captioner", mapper=mapper, lm=lm, tokenizer=tok, lm_trained=True,
                          lm_spec=str(lm_dir), audio_model=encoder_path, audio_embedding_dim=encoder.embedding_dim,
                          generation={"beam_size": 1, "max_new_tokens": 4})


def test_captioner_travels_with_its_encoder(hub, tmp_path, tiny_m2d_file, wav_factory, monkeypatch):
    captioner_dir = _tiny_captioner(tmp_path, tiny_m2d_file)
    wav = wav_factory(duration_s=1.0)
    expected = from_pretrained(captioner_dir).caption(wav)
    plan = push_to_hub(captioner_dir, "kiki/cap", dry_run=True)
    paths = [f.path_in_repo for f in plan.files]
    assert "audio_model/model.safetensors" in paths and "captioner.json" in paths and "lm/config.json" in paths

    push_to_hub(captioner_dir, "kiki/cap", token="hf_test")
    tiny_m2d_file.rename(tiny_m2d_file.with_suffix(".moved"))  # the original encoder is gone: the repo carries it
    try:
        loaded = from_pretrained("hf://kiki/cap")
        assert isinstance(loaded, Captioner)
        assert loaded.caption(wav) == expected
    finally:
        tiny_m2d_file.with_suffix(".moved").rename(tiny_m2d_file)
    saved = json.loads((tmp_path / "hf-cache").joinpath(*_snapshot_config(tmp_path)).read_text())
    assert saved["audio_model"] == "audio_model"


def _snapshot_config(tmp_path):
    found = sorted((tmp_path / "hf-cache").glob("models--kiki--cap/snapshots/*/captioner.json"))
    assert len(found) == 1
    return found[0].relative_to(tmp_path / "hf-cache").parts


def test_from_pretrained_errors_name_the_source(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        from_pretrained(tmp_path / "missing" / "deeper")
    with pytest.raises(CheckpointError, match="not a kikimimi model folder"):
        from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="kind must be one of"):
        from_pretrained(tmp_path, kind="tokenizer")
    with pytest.raises(TypeError, match="save_pretrained expects"):
        save_pretrained(object(), tmp_path / "out")


def test_load_captioner_and_from_pretrained_take_hf_ids_then_work_offline(hub, tmp_path, tiny_m2d_file, wav_factory,
                                                                          monkeypatch):
    import huggingface_hub.constants as constants

    captioner_dir = _tiny_captioner(tmp_path, tiny_m2d_file)
    wav = wav_factory(duration_s=1.0)
    expected = from_pretrained(captioner_dir).caption(wav)
    saved = save_pretrained(captioner_dir, tmp_path / "saved-captioner")
    assert json.loads((saved / "captioner.json").read_text())["audio_model"] == "audio_model"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # its encoder is found beside it (audio_model/), not from the working folder
    assert kikimimi.load_captioner(saved).caption(wav) == expected
    push_to_hub(saved, "kiki/cap2", token="hf_test")
    assert isinstance(kikimimi.from_pretrained("hf://kiki/cap2"), Captioner)  # dispatched by captioner.json
    downloads = sum(n for line, n in hub.requests.items() if "/resolve/" in line)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert kikimimi.load_captioner("hf://kiki/cap2").caption(wav) == expected  # from the Hub cache, offline
    assert sum(n for line, n in hub.requests.items() if "/resolve/" in line) == downloads
    with pytest.raises(CheckpointError, match="hf://kiki/never"):
        kikimimi.load_captioner("hf://kiki/never")


def test_top_level_from_pretrained_dispatches_by_the_folder_kind(tmp_path, tiny_m2d_file):
    from clap_fakes import write_tiny_clap2024

    encoder_dir = save_pretrained(kikimimi.load(tiny_m2d_file, "cpu", precision="fp32"), tmp_path / "enc")
    clap_dir = save_pretrained(kikimimi.load_clap(write_tiny_clap2024(tmp_path / "official"), device="cpu",
                                                  precision="fp32"), tmp_path / "clap")
    assert type(kikimimi.from_pretrained(encoder_dir, device="cpu")) is AudioEncoder
    assert isinstance(kikimimi.from_pretrained(clap_dir, device="cpu"), CLAPModel)
    assert type(kikimimi.from_pretrained(clap_dir, kind="encoder", device="cpu")) is AudioEncoder


def test_from_pretrained_takes_a_registered_name(monkeypatch):
    from kikimimi.checkpoints.registry import default_packaged_model

    name = default_packaged_model("encoder")
    if name is None:
        pytest.skip("no packaged encoder in this checkout")
    model = kikimimi.from_pretrained(name, device="cpu")
    assert isinstance(model, AudioEncoder) and model.embedding_dim > 0
    with pytest.raises(CheckpointError, match="nor a registered name"):
        from_pretrained("no-such-model-name")
