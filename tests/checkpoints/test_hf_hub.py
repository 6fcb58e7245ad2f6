"""``hf://owner/name[@revision]`` sources and pushes, against the local Hub server of ``tests/hub_server.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

import huggingface_hub.constants as hub_constants  # noqa: E402
from hub_server import HubServer, hub_environment  # noqa: E402

import kikimimi  # noqa: E402
from kikimimi.checkpoints import CheckpointError, load_encoder, resolve_model_source  # noqa: E402
from kikimimi.checkpoints.hf_hub import HubRef, parse_hf_uri, plan_push, push_folder  # noqa: E402
from kikimimi.checkpoints.ours import save_kikimimi  # noqa: E402


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = HubServer().start()
    hub_environment(monkeypatch, tmp_path, server)
    yield server
    server.stop()


@pytest.fixture
def tiny_folder(tmp_path, tiny_m2d_file):
    return save_kikimimi(load_encoder(tiny_m2d_file), tmp_path / "tiny-kikimimi")


def test_parse_hf_uri_grammar():
    assert parse_hf_uri("hf://owner/name") == HubRef("owner/name", None)
    assert parse_hf_uri("hf://owner/name@v1.0") == HubRef("owner/name", "v1.0")
    assert parse_hf_uri("owner/my-model.v2").repo_id == "owner/my-model.v2"
    assert str(HubRef("a/b", "main")) == "hf://a/b@main"
    for bad in ("hf://name-only", "hf://a/b/c", "hf://a/b@", "hf://a/../b", "hf://a/b--c"):
        with pytest.raises(CheckpointError, match="hf://"):
            parse_hf_uri(bad)


def test_load_hf_uri_caches_then_works_offline(hub, tiny_folder, monkeypatch, wav_factory):
    hub.publish_folder("kiki/tiny-m2d", tiny_folder, tag="v1")
    wav = wav_factory(duration_s=1.0)
    expected = kikimimi.load(tiny_folder, "cpu").embed(wav)

    model = kikimimi.load("hf://kiki/tiny-m2d", "cpu")
    np.testing.assert_allclose(model.embed(wav), expected, rtol=1e-5, atol=1e-6)
    local = resolve_model_source("hf://kiki/tiny-m2d@v1")
    assert "models--kiki--tiny-m2d" in str(local) and (local / "model.safetensors").is_file()
    files_fetched = sum(n for r, n in hub.requests.items() if r.startswith("GET /kiki/tiny-m2d/resolve/"))
    assert files_fetched == 2  # config.json and model.safetensors, once (the tag resolves to the cached commit)

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    before = sum(hub.requests.values())
    again = kikimimi.load("hf://kiki/tiny-m2d@v1", "cpu")
    np.testing.assert_allclose(again.embed(wav), expected, rtol=1e-5, atol=1e-6)
    assert sum(hub.requests.values()) == before  # offline: nothing asked of the server


def test_kikimimi_offline_variable_uses_the_cache_only(hub, tiny_folder, monkeypatch):
    hub.publish_folder("kiki/tiny-m2d", tiny_folder)
    first = resolve_model_source("hf://kiki/tiny-m2d")
    monkeypatch.setenv("KIKIMIMI_OFFLINE", "1")
    before = sum(hub.requests.values())
    assert resolve_model_source("hf://kiki/tiny-m2d") == first
    assert sum(hub.requests.values()) == before
    with pytest.raises(CheckpointError, match=r"'hf://kiki/never-cached': not in the Hub cache and offline"):
        resolve_model_source("hf://kiki/never-cached")


def test_unknown_repository_and_revision_are_one_line_errors(hub, tiny_folder):
    hub.publish_folder("kiki/tiny-m2d", tiny_folder)
    with pytest.raises(CheckpointError, match=r"^'hf://kiki/absent': no such Hub model repository"):
        kikimimi.load("hf://kiki/absent")
    with pytest.raises(CheckpointError, match=r"^'hf://kiki/tiny-m2d@nope': no revision 'nope'"):
        kikimimi.load("hf://kiki/tiny-m2d@nope")


def test_tampered_weights_on_the_hub_are_refused(hub, tiny_folder):
    files = {p.name: p.read_bytes() for p in tiny_folder.iterdir()}
    weights = bytearray(files["model.safetensors"])
    weights[-1] ^= 0x01  # one bit of one tensor: the header still parses, the SHA-256 does not match
    files["model.safetensors"] = bytes(weights)
    hub.add_commit("kiki/tampered", files)
    with pytest.raises(CheckpointError, match="SHA-256|sha256|checksum"):
        kikimimi.load("hf://kiki/tampered")


def test_push_dry_run_plan_lists_every_file_with_its_hash(tiny_folder):
    plan = push_folder(tiny_folder, "kiki/tiny-m2d", dry_run=True)
    config = json.loads((tiny_folder / "config.json").read_text())
    by_path = {f.path_in_repo: f for f in plan.files}
    assert sorted(by_path) == ["config.json", "model.safetensors"]
    assert by_path["model.safetensors"].sha256 == config["weights_sha256"]
    assert by_path["model.safetensors"].size == config["weights_size"]
    assert plan.commit_url is None


def test_push_leaves_out_hidden_files_and_locks(tiny_folder):
    (tiny_folder / ".kikimimi-123-abcd.model.safetensors.tmp").write_bytes(b"partial")
    (tiny_folder / ".kikimimi.lock").write_text("")
    assert [f.path_in_repo for f in plan_push(tiny_folder, "kiki/x").files] == ["config.json", "model.safetensors"]


def test_push_refuses_a_folder_that_is_no_model(tmp_path):
    with pytest.raises(CheckpointError, match="not a kikimimi model folder"):
        plan_push(tmp_path, "kiki/x")
    with pytest.raises(CheckpointError, match="owner/name"):
        plan_push(tmp_path, "no-owner")


def test_push_then_load_round_trip(hub, tiny_folder, wav_factory):
    plan = push_folder(tiny_folder, "kiki/pushed", token="hf_test_token")
    assert plan.commit_url and "/kiki/pushed/commit/" in plan.commit_url
    assert hub.pushed and hub.pushed[0]["summary"].startswith("Upload kikimimi model")
    wav = wav_factory(duration_s=1.0)
    np.testing.assert_allclose(kikimimi.load("hf://kiki/pushed", "cpu").embed(wav),
                               kikimimi.load(tiny_folder, "cpu").embed(wav), rtol=1e-5, atol=1e-6)


def test_missing_extra_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as when the package is absent
    with pytest.raises(CheckpointError, match=r'pip install "kikimimi\[hub\]"'):
        resolve_model_source("hf://kiki/tiny-m2d")
