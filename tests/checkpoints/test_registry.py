"""The model registry: every official release is listed, parses with the name grammar, and its layout loads.

Each entry's file is generated in the entry's layout (``tests/official_layouts.py``, tiny ViT width/depth, the
entry's real input and patch sizes) inside a folder named like the release, then loaded with ``load_encoder``.
"""

from __future__ import annotations

import re
import warnings

import official_layouts as ol
import pytest

from kikimimi.checkpoints import (
    CheckpointError,
    UnknownModelError,
    get_entry,
    list_models,
    load_encoder,
    parse_official_name,
    register_model,
    registry,
    resolve_model_source,
)
from kikimimi.checkpoints.registry import ALIASES, LICENCES, OFFICIAL_MODELS, PACKAGED_MODELS, ModelEntry

D, DEPTH = 32, 1


@pytest.fixture(autouse=True)
def clean_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("KIKIMIMI_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(registry, "_registered", {})


def test_the_table_holds_every_official_release():
    zips = [e for e in OFFICIAL_MODELS if e.kind in ("zip", "tgz")]  # m2d_x_icbhi is a .tgz
    files = [e for e in OFFICIAL_MODELS if e.kind == "file"]
    assert len(zips) == 18 and len(files) == 4
    names = [e.name for e in OFFICIAL_MODELS]
    assert len(set(names)) == len(names) and all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n) for n in names)
    assert {"m2d-vit-base-mr7", "m2d-clap-2025", "m2d-as-audioset-ft", "byola-v1-d512"} <= set(names)
    assert {e.url.split("/download/")[1].split("/")[0] for e in zips} == {"v0.1.0", "v0.2.0", "v0.3.0", "v0.5.0"}
    assert all(e.url.startswith("https://github.com/nttcslab/m2d/releases/download/") for e in zips)
    assert all(e.url.startswith("https://github.com/nttcslab/byol-a/raw/master/") for e in files)
    assert all(e.licence_info.gated for e in OFFICIAL_MODELS)
    packaged = [e.name for e in PACKAGED_MODELS]  # kikimimi's own (tests/checkpoints/test_packaged_models.py)
    assert all(target in names + packaged for target in ALIASES.values())
    assert [e.name for e in list_models()] == names + packaged


@pytest.mark.parametrize("entry", [e for e in OFFICIAL_MODELS if e.name != "m2d-x-icbhi"],  # not in the grammar
                         ids=lambda e: e.name)
def test_entry_agrees_with_the_name_grammar(entry: ModelEntry):
    parsed = parse_official_name(entry.folder_name)
    assert parsed.sample_rate == entry.sample_rate
    assert parsed.input_size == entry.input_size
    assert parsed.patch_size == entry.patch_size
    if parsed.family == "m2d":
        assert entry.embedding_dim == entry.input_size[0] // entry.patch_size[0] * 768
        assert entry.family.replace("-", "_") in parsed.model_cls
    else:
        assert entry.family == "byola" and entry.embedding_dim == parsed.feature_d


def _write_layout(entry: ModelEntry, root):
    """A tiny file in ``entry.layout`` at ``root/<release folder>/<inner file>``."""
    folder = root / entry.folder_name
    inner = entry.inner or (entry.file_name if entry.kind == "file" else "weights.pth")
    sizes = dict(input_size=entry.input_size, patch_size=entry.patch_size)
    if entry.layout == "m2d-full":
        offline = 128 if entry.family in ("m2d-as", "m2d-s") else None
        state = ol.m2d_full_state(D, DEPTH, **sizes, decoder_dim=16, decoder_depth=1, offline_dim=offline)
        return ol.write_training_checkpoint(folder / inner, state)
    if entry.layout == "m2d-enconly":
        return ol.write_state(folder / inner, ol.m2d_encoder_state(D, DEPTH, **sizes))
    if entry.layout == "evar-ft":
        return ol.write_state(folder / inner, ol.evar_finetuned(D, DEPTH, **sizes, n_classes=527))
    if entry.layout == "clap2024-full":
        return ol.write_training_checkpoint(folder / inner, ol.clap2024(D, DEPTH, **sizes, decoder_dim=16,
                                                                         decoder_depth=1))
    if entry.layout == "clap2025":
        return ol.write_state(folder / inner, ol.clap2025(D, DEPTH, **sizes), wrapper="model")
    if entry.layout == "byola-v1":
        return ol.write_state(folder / inner, ol.byola_v1(d=entry.embedding_dim))
    if entry.layout == "byola-v2":
        return ol.write_state(folder / inner, ol.byola_v2())
    raise AssertionError(f"no generator for layout {entry.layout}")


@pytest.mark.parametrize("entry", OFFICIAL_MODELS, ids=lambda e: e.name)
def test_entry_layout_loads(entry: ModelEntry, tmp_path):
    path = _write_layout(entry, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BYOL-A / M2D-S statistics warnings
        bundle = load_encoder(path, norm_stats=(-9.0, 4.0) if entry.family == "byola" else None)
    assert bundle.frontend.sample_rate == entry.sample_rate
    if entry.family == "byola":
        assert bundle.family == "byola" and bundle.encoder.embedding_dim == entry.embedding_dim
    else:
        assert tuple(bundle.config["vit"]["input_size"]) == entry.input_size
        assert bundle.encoder.embedding_dim * 768 == entry.embedding_dim * D  # Fg·D with D = 32 here
    assert (bundle.head is not None) == (entry.head == "tagging")
    assert (bundle.audio_proj is not None) == (entry.head == "clap")


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match="close matches: m2d-clap-2025") as info:
        get_entry("m2d-clap-2052")
    assert isinstance(info.value, CheckpointError) and "kikimimi models list" in str(info.value)
    assert get_entry("m2d2").name == "m2d-clap-2025"


def test_resolver_paths_win_and_non_names_pass_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m2d-vit-base-mr7").write_bytes(b"a local file with a registered name")
    assert resolve_model_source("m2d-vit-base-mr7") == tmp_path.joinpath("m2d-vit-base-mr7").relative_to(tmp_path)
    assert str(resolve_model_source("missing/checkpoint-300.pth")) == "missing/checkpoint-300.pth"
    with pytest.raises(UnknownModelError, match="no such file or folder, and unknown model name"):
        resolve_model_source("m2d-vit-bse-mr7")
    with pytest.raises(CheckpointError, match="file not found"):
        load_encoder("missing.pth")  # a path-like argument keeps the loader's own message


def test_register_pin_and_persist(tmp_path):
    pinned = register_model("m2d-clap-2025", get_entry("m2d-clap-2025").url, replace=True, sha256="ab" * 32)
    assert pinned.sha256 == "ab" * 32 and pinned.layout == "clap2025" and get_entry("m2d-clap-2025") is pinned
    with pytest.raises(ValueError, match="already registered"):
        register_model("m2d-clap-2025", "https://example.invalid/x.zip")
    with pytest.raises(ValueError, match="sha256"):
        register_model("bad-hash", "https://example.invalid/x.zip", sha256="xyz")
    with pytest.raises(ValueError, match="model name"):
        register_model("../escape", "https://example.invalid/x.zip")
    entry = register_model("my-model", "https://example.invalid/models/my-model", licence="apache-2.0", persist=True)
    assert entry.kind == "folder" and not entry.licence_info.gated
    registry._registered.clear()  # a later process reads the user registry file
    assert get_entry("my-model") == entry
    registry.unregister_model("my-model")
    assert registry.find_entry("my-model") is None
    assert set(LICENCES) >= {"ntt-m2d-eval", "ntt-byola-eval", "apache-2.0"}
