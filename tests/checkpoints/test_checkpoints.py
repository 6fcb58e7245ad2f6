"""Official checkpoint layouts → EncoderBundle, name parsing, kikimimi format and `kikimimi convert`.

Official-layout files are built by ``tests/official_layouts.py`` from the key lists of docs/reference.md §5 (not from
our model classes). Loads use tiny ViTs (64-d, 2 blocks) for speed; key counts use base-size dicts.
"""

from __future__ import annotations

import json
import warnings

import official_layouts as L
import pytest
import torch

from kikimimi.checkpoints import (
    BYOLA_FALLBACK_STATS,
    LICENCE_NOTE,
    CheckpointError,
    load_encoder,
    parse_official_name,
    save_kikimimi,
    to_official_state_dict,
)
from kikimimi.checkpoints.layouts import split_official
from kikimimi.cli import main as cli_main
from kikimimi.features.normstats import M2D_DEFAULT

TINY = dict(embed_dim=64, depth=2, input_size=(80, 64), patch_size=(16, 16))
TINY_NAME = "m2d_vit_base-80x64p16x16-231231-tiny"


def _assert_loaded(module: torch.nn.Module, expected: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Every tensor of ``module`` equals the file tensor ``prefix + name``, and nothing is left over."""
    own = module.state_dict()
    assert set(own) == {k[len(prefix) :] for k in expected if k.startswith(prefix)}
    for key, value in own.items():
        assert torch.equal(value, expected[prefix + key]), key


def _encoder_part(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    names = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")
    return {k: v for k, v in state.items() if k[len(prefix) :].startswith(names) and k.startswith(prefix)}


def _tokens(bundle, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if bundle.family == "m2d":
        f, t = bundle.config["vit"]["input_size"]
        x = torch.randn(2, 1, f, t, generator=g)
        with torch.no_grad():
            return bundle.encoder.forward_tokens(x)
    x = torch.randn(2, 1, bundle.config["byola"]["n_mels"], 96, generator=g)
    with torch.no_grad():
        return bundle.encoder(x)


# ----------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("name", "cls", "inp", "patch", "sr", "extras"),
    [
        ("m2d_vit_base-80x608p16x16-221006-mr7", "m2d_vit_base", (80, 608), (16, 16), 16000, ()),
        ("m2d_vit_base-80x608p16x16-221006-mr6", "m2d_vit_base", (80, 608), (16, 16), 16000, ()),
        ("m2d_vit_base-80x608p16x16-221006-mr7_enconly", "m2d_vit_base", (80, 608), (16, 16), 16000, ()),
        ("m2d_vit_base-80x608p16x16-220930-mr7_enconly", "m2d_vit_base", (80, 608), (16, 16), 16000, ()),
        ("m2d_vit_base-80x200p16x4-230529", "m2d_vit_base", (80, 200), (16, 4), 16000, ()),
        ("m2d_as_vit_base-80x608p16x16-240213", "m2d_as_vit_base", (80, 608), (16, 16), 16000, ()),
        ("m2d_clap_vit_base-80x608p16x16-240128", "m2d_clap_vit_base", (80, 608), (16, 16), 16000, ()),
        (
            "m2d_as_vit_base-80x608p16x16p32k-240413_enconly",
            "m2d_as_vit_base",
            (80, 608),
            (16, 16),
            32000,
            (),
        ),
        (
            "m2d_clap_vit_base-80x1001p16x16-240128_AS-FT_enconly",
            "m2d_clap_vit_base",
            (80, 1001),
            (16, 16),
            16000,
            (),
        ),
        (
            "m2d_as_vit_base-80x1001p16x16-240213_AS-FT_enconly",
            "m2d_as_vit_base",
            (80, 1001),
            (16, 16),
            16000,
            (),
        ),
        (
            "m2d_vit_base-80x1001p16x16-221006-mr7_as_46ab246d",
            "m2d_vit_base",
            (80, 1001),
            (16, 16),
            16000,
            (),
        ),
        (
            "m2d_as_vit_base-80x1001p16x16p32k-240413_AS-FT_enconly",
            "m2d_as_vit_base",
            (80, 1001),
            (16, 16),
            32000,
            (),
        ),
        ("m2d_s_vit_base-80x608p80x2-230220", "m2d_s_vit_base", (80, 608), (80, 2), 16000, ()),
        ("m2d_s_vit_base-80x512p80x2-230301", "m2d_s_vit_base", (80, 512), (80, 2), 16000, ()),
        ("m2d_s_vit_base-80x400p80x2-230201", "m2d_s_vit_base", (80, 400), (80, 2), 16000, ()),
        (
            "m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025",
            "m2d_clap_vit_base",
            (80, 1001),
            (16, 16),
            16000,
            ("B", "TI"),
        ),
    ],
)
def test_parse_released_m2d_names(name, cls, inp, patch, sr, extras):
    parsed = parse_official_name(f"/weights/{name}/checkpoint-300.pth")
    assert (parsed.model_cls, parsed.input_size, parsed.patch_size) == (cls, inp, patch)
    assert (parsed.sample_rate, parsed.extras, parsed.family) == (sr, extras, "m2d")
    assert parsed.is_m2d_s == cls.startswith("m2d_s_")


def test_parse_byola_names_and_fallbacks():
    v1 = parse_official_name("pretrained_weights/AudioNTT2020-BYOLA-64x96d512.pth")
    assert (v1.family, v1.byola_version, v1.feature_d, v1.input_size) == ("byola", 1, 512, (64, 96))
    assert parse_official_name("AudioNTT2020-BYOLA-64x96d2048.pth").feature_d == 2048
    v2 = parse_official_name("v2/AudioNTT2022-BYOLA-64x96d2048.pth")
    assert (v2.byola_version, v2.feature_d) == (2, 3072)
    # parent folder wins over the file stem; the stem is the fallback
    both = parse_official_name("m2d_vit_base-80x200p16x4-230529/m2d_vit_base-80x608p16x16-x.pth")
    assert both.input_size == (80, 200)
    stem = parse_official_name("renamed_folder/m2d_vit_base-80x608p16x16p32k-x.pth")
    assert (stem.input_size, stem.sample_rate) == ((80, 608), 32000)
    with pytest.raises(CheckpointError, match="cannot read the model size") as info:
        parse_official_name("some/folder/weights.pth")
    assert "weights.pth" in str(info.value)


# ------------------------------------------------------------------------------------ key counts
def test_documented_key_counts_at_base_size():
    with L.uninitialised():
        assert len(L.m2d_encoder_state(norm_stats=False)) == 150
        assert len(L.m2d_encoder_state()) == 151
        assert len(L.m2d_full_state(norm_stats=False)) == 400
        assert len(L.m2d_full_state()) == 401
        assert len(L.clap2024()) == 405
        assert len(L.clap2024(norm_stats=True)) == 406
        assert sum(k.startswith("backbone.") for k in L.clap2025()) == 166
        assert L.m2d_encoder_state()["pos_embed"].shape == (1, 191, 768)
        assert L.m2d_full_state()["decoder_blocks.7.attn.qkv.weight"].shape == (1536, 512)
    assert len(L.byola_v1()) == 25 and len(L.byola_v2()) == 18
    n_params = {
        d: sum(v.numel() for k, v in L.byola_v1(d).items() if "num_batches" not in k) for d in (512, 2048)
    }
    # BN running stats are buffers, not parameters: subtract 3 blocks x 2 x 64
    assert n_params[512] - 3 * 128 == 600_192 and n_params[2048] - 3 * 128 == 5_321_856
    v2 = sum(v.numel() for k, v in L.byola_v2().items() if "num_batches" not in k) - 2 * 128
    assert v2 == 6_333_376


def test_split_of_base_files_keeps_encoder_and_drops_training_parts():
    with L.uninitialised():
        split = split_official({"model": L.clap2024(norm_stats=True)}, "clap.pth")
        split25 = split_official({"model": L.clap2025()}, "c25.pth")
    assert len(split.encoder) == 150 and split.norm_stats is not None
    assert len(split.audio_proj) == 4 and split.logit_scale is not None
    assert len(split.dropped) == 406 - 150 - 1 - 4 - 1 and not split.unknown
    assert all(k.startswith(("decoder_", "target_", "mask_token")) for k in split.dropped)
    assert len(split25.encoder) + 1 + len(split25.audio_proj) == 166
    assert len(split25.text_encoder_state) == len(L.text_encoder_state())


# ----------------------------------------------------------------------------- official layouts
def test_full_training_file_loads_without_trusting_pickle(tmp_path):
    state = L.m2d_full_state(**TINY, decoder_dim=32, decoder_depth=1)
    path = L.write_training_checkpoint(tmp_path / TINY_NAME / "checkpoint-300.pth", state)
    bundle = load_encoder(path)
    assert bundle.family == "m2d"
    _assert_loaded(bundle.encoder, _encoder_part(state))
    assert bundle.norm_stats.to_list() == pytest.approx(state["norm_stats"].tolist())
    vit = bundle.config["vit"]
    assert (vit["embed_dim"], vit["depth"], tuple(vit["input_size"])) == (64, 2, (80, 64))
    assert bundle.frontend.sample_rate == 16000 and bundle.frontend.n_mels == 80
    assert bundle.head is None and bundle.audio_proj is None and not bundle.encoder.training
    assert _tokens(bundle).shape == (2, 5 * 4, 64)


def test_encoder_only_without_stats_uses_documented_default(tmp_path):
    state = L.m2d_encoder_state(**TINY, norm_stats=False)
    path = L.write_state(tmp_path / TINY_NAME / "weights.pth", state)
    bundle = load_encoder(path)
    assert bundle.norm_stats == M2D_DEFAULT
    _assert_loaded(bundle.encoder, state)
    given = load_encoder(path, norm_stats=(-5.0, 3.0))
    assert given.norm_stats.to_list() == [-5.0, 3.0]


@pytest.mark.parametrize("wrapper", [None, "model"])
def test_evar_finetuned_with_head(tmp_path, wrapper):
    state = L.evar_finetuned(**{**TINY, "input_size": (80, 100)}, n_classes=7)
    path = L.write_state(tmp_path / "m2d_vit_base-80x100p16x16-x_as" / "weights_ep1.pth", state, wrapper)
    bundle = load_encoder(path)
    _assert_loaded(bundle.encoder, _encoder_part(state, L.EVAR_PREFIX), L.EVAR_PREFIX)
    head = bundle.head.state_dict()
    assert torch.equal(head["norm.running_mean"], state["module.head.norm.running_mean"])
    assert torch.equal(head["norm.running_var"], state["module.head.norm.running_var"])
    assert torch.equal(head["linear.weight"], state["module.head.mlp.mlp.0.weight"])
    assert torch.equal(head["linear.bias"], state["module.head.mlp.mlp.0.bias"])
    assert bundle.config["head"] == {"in_dim": 5 * 64, "n_classes": 7}
    feats = torch.randn(3, 5 * 64)
    assert bundle.head(feats).shape == (3, 7)


def _assert_loaded_prefixed(module, state, prefix):
    own = module.state_dict()
    for key, value in own.items():
        assert torch.equal(value, state[prefix + key]), key
    assert len(own) == sum(k.startswith(prefix) for k in state)


def test_clap2024_projector_and_logit_scale(tmp_path):
    state = L.clap2024(**TINY, decoder_dim=32, decoder_depth=1)
    path = L.write_training_checkpoint(tmp_path / "m2d_clap_vit_base-80x64p16x16-240128" / "ck.pth", state)
    bundle = load_encoder(path)
    assert bundle.norm_stats == M2D_DEFAULT  # the 2024 release has no norm_stats
    _assert_loaded(bundle.encoder, _encoder_part(state))
    _assert_loaded_prefixed(bundle.audio_proj, state, "audio_proj.")
    assert bundle.config["audio_proj"] == {"kind": "mlp", "dim": 64}
    assert bundle.logit_scale == pytest.approx(float(state["logit_scale"]))
    assert bundle.text_proj is None


@pytest.mark.parametrize("text_proj", [None, "linear", "mlp"])
def test_clap2025_backbone_prefix_semantic_projector_and_text_encoder(tmp_path, text_proj):
    state = L.clap2025(**{**TINY, "input_size": (80, 100)}, sem_depth=2, text_proj=text_proj)
    name = "m2d_clap_vit_base-80x100p16x16p16kpBpTI-2025"
    path = L.write_state(tmp_path / name / "checkpoint-30.pth", state, "model")
    bundle = load_encoder(path)
    assert bundle.norm_stats.to_list() == pytest.approx(list(L.CLAP2025_NORM_STATS))
    _assert_loaded_prefixed(bundle.audio_proj, state, "backbone.audio_proj.")
    assert bundle.config["audio_proj"] == {"kind": "semantic", "dim": 64, "depth": 2, "mlp_ratio": 1.0}
    assert bundle.config["name_extras"] == ["B", "TI"]
    te = L.text_encoder_state()
    assert set(bundle.text_encoder_state) == set(te)
    assert all(torch.equal(bundle.text_encoder_state[k], v) for k, v in te.items())
    if text_proj is None:
        assert bundle.text_proj is None
    else:
        _assert_loaded_prefixed(bundle.text_proj, state, "backbone.text_proj.")
        assert bundle.text_proj(torch.randn(2, 4096)).shape == (2, 64)


def test_m2d_s_warns_about_stats_and_32k_uses_32k_front_end(tmp_path):
    state = L.m2d_encoder_state(embed_dim=64, depth=1, input_size=(80, 40), patch_size=(80, 2))
    path = L.write_state(tmp_path / "m2d_s_vit_base-80x40p80x2-230201" / "w.pth", state)
    with pytest.warns(UserWarning, match="M2D-S"):
        bundle = load_encoder(path)
    assert bundle.config["vit"]["patch_size"] == [80, 2] and bundle.frontend.sample_rate == 16000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_encoder(path, norm_stats=(-8.0, 4.0))  # explicit stats → no warning
    state32 = L.m2d_encoder_state(embed_dim=64, depth=1, input_size=(80, 32), patch_size=(16, 4))
    path32 = L.write_state(tmp_path / "m2d_as_vit_base-80x32p16x4p32k-x_enconly" / "w.pth", state32)
    b32 = load_encoder(path32)
    assert b32.frontend.sample_rate == 32000 and b32.frontend.hop_length == 320
    assert b32.config["vit"]["patch_size"] == [16, 4]


@pytest.mark.parametrize("wrapper", [None, "state_dict"])
def test_byola_v1_plain_and_prefixed(tmp_path, wrapper):
    plain = L.byola_v1(d=64)
    state = plain if wrapper is None else L.prefixed(plain, "model.online_net.backbone.")
    path = L.write_state(tmp_path / "AudioNTT2020-BYOLA-64x96d64.pth", state, wrapper)
    with pytest.warns(UserWarning, match="per dataset"):
        bundle = load_encoder(path)
    assert bundle.family == "byola" and bundle.norm_stats == BYOLA_FALLBACK_STATS
    assert bundle.config["byola"] == {"version": 1, "n_mels": 64, "d": 64}
    _assert_loaded(bundle.encoder, plain)
    assert bundle.frontend.n_mels == 64 and bundle.frontend.n_fft == 1024
    assert _tokens(bundle).shape == (2, 64)


def test_byola_v2_and_name_conflicts(tmp_path):
    state = L.byola_v2()
    path = L.write_state(tmp_path / "v2" / "AudioNTT2022-BYOLA-64x96d2048.pth", state)
    bundle = load_encoder(path, norm_stats=(-9.0, 4.5))
    assert bundle.config["byola"] == {"version": 2, "n_mels": 64, "d": 3072}
    _assert_loaded(bundle.encoder, state)
    assert bundle.norm_stats.to_list() == [-9.0, 4.5]
    wrong = L.write_state(tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth", L.byola_v1(d=64))
    with pytest.raises(CheckpointError, match="d=512"):
        load_encoder(wrong, norm_stats=(0.0, 1.0))
    swapped = L.write_state(tmp_path / "AudioNTT2020-BYOLA-64x96d3072.pth", state)
    with pytest.raises(CheckpointError, match="v1"):
        load_encoder(swapped, norm_stats=(0.0, 1.0))


# ------------------------------------------------------------------------ names vs overrides
def test_name_override_and_shape_rules(tmp_path):
    state = L.m2d_encoder_state(**TINY)
    # the folder name claims 80x608 but pos_embed holds a 5x4 grid → error naming the source
    bad = L.write_state(tmp_path / "m2d_vit_base-80x608p16x16-x" / "w.pth", state)
    with pytest.raises(CheckpointError, match="m2d_vit_base-80x608p16x16-x") as info:
        load_encoder(bad)
    assert "pos_embed" in str(info.value)
    # an explicit override wins over the name
    assert load_encoder(bad, input_size=(80, 64)).config["vit"]["input_size"] == [80, 64]
    # overrides must still agree with the tensors
    with pytest.raises(CheckpointError, match="patch_size override"):
        load_encoder(bad, input_size=(80, 64), patch_size=(16, 4))
    with pytest.raises(CheckpointError, match="size='base'"):
        load_encoder(bad, input_size=(80, 64), size="base")
    # no usable name → sizes from shapes (80 mel bins assumed)
    anon = L.write_state(tmp_path / "plain" / "weights.pth", state)
    vit = load_encoder(anon).config["vit"]
    assert (vit["input_size"], vit["patch_size"], vit["sample_rate"]) == ([80, 64], [16, 16], 16000)
    assert load_encoder(anon, sample_rate=32000).frontend.sample_rate == 32000
    with pytest.raises(CheckpointError, match="22050"):
        load_encoder(anon, sample_rate=22050)


def test_unknown_layout_and_incomplete_encoder_list_keys(tmp_path):
    junk = L.write_state(tmp_path / "junk.pth", {"foo.weight": torch.zeros(3), "bar.bias": torch.ones(2)})
    with pytest.raises(CheckpointError, match="unknown checkpoint layout") as info:
        load_encoder(junk)
    text = str(info.value)
    assert "missing keys" in text and "patch_embed.proj.weight" in text
    assert "unexpected keys" in text and "foo.weight" in text and "junk.pth" in text

    state = L.m2d_encoder_state(**TINY)
    del state["blocks.1.attn.qkv.weight"]
    state["blocks.1.attn.extra"] = torch.zeros(1)
    broken = L.write_state(tmp_path / TINY_NAME / "broken.pth", state)
    with pytest.raises(CheckpointError) as info:
        load_encoder(broken)
    assert "blocks.1.attn.qkv.weight" in str(info.value) and "blocks.1.attn.extra" in str(info.value)

    extra = L.m2d_encoder_state(**TINY)
    extra["something_new.weight"] = torch.zeros(2)
    odd = L.write_state(tmp_path / TINY_NAME / "odd.pth", extra)
    with pytest.warns(UserWarning, match="something_new.weight"):
        load_encoder(odd)


def test_directory_and_pickle_errors_reach_the_caller(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_encoder(tmp_path)
    evil = tmp_path / "evil.pth"
    torch.save({"model": L.m2d_encoder_state(**TINY), "x": warnings.WarningMessage}, evil)
    with pytest.raises(CheckpointError, match="trust_pickle"):
        load_encoder(evil)
    assert load_encoder(evil, trust_pickle=True).family == "m2d"


# ------------------------------------------------------------------------- kikimimi format
def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    state = L.evar_finetuned(**TINY, n_classes=5)
    src = load_encoder(L.write_state(tmp_path / TINY_NAME / "ft.pth", state))
    out = save_kikimimi(src, tmp_path / "converted")
    assert (out / "model.safetensors").is_file()
    meta = json.loads((out / "config.json").read_text())
    assert meta["family"] == "m2d" and meta["norm_stats"] == pytest.approx(src.norm_stats.to_list())
    assert meta["extras"]["head"] is True and meta["extras"]["audio_proj"] is False
    assert meta["licence_note"] == LICENCE_NOTE and meta["source"].endswith("ft.pth")
    for target in (out, out / "model.safetensors"):
        back = load_encoder(target)
        assert torch.equal(_tokens(back), _tokens(src))
        assert back.frontend == src.frontend and back.norm_stats == src.norm_stats
        _assert_loaded(back.head, src.head.state_dict())
    with pytest.raises(CheckpointError, match="input_size"):
        load_encoder(out, input_size=(80, 608))


def test_clap2025_and_byola_round_trips(tmp_path):
    state = L.clap2025(**TINY, text_proj="linear")
    folder = tmp_path / "m2d_clap_vit_base-80x64p16x16p16kpBpTI-2025"
    src = load_encoder(L.write_state(folder / "c.pth", state))
    back = load_encoder(save_kikimimi(src, tmp_path / "k25"))
    assert torch.equal(_tokens(back), _tokens(src))
    _assert_loaded(back.audio_proj, src.audio_proj.state_dict())
    _assert_loaded(back.text_proj, src.text_proj.state_dict())
    assert set(back.text_encoder_state) == set(src.text_encoder_state)
    official = to_official_state_dict(src)
    assert all(k.startswith(("backbone.", "text_encoder.")) for k in official)
    assert len([k for k in official if k.startswith("backbone.")]) == 4 + 12 * 2 + 2 + 1 + 1 + 12 + 2 + 2

    byola = load_encoder(
        L.write_state(tmp_path / "AudioNTT2020-BYOLA-64x96d64.pth", L.byola_v1(d=64)), norm_stats=(-6.0, 5.0)
    )
    b_back = load_encoder(save_kikimimi(byola, tmp_path / "kb"))
    assert b_back.norm_stats.to_list() == [-6.0, 5.0]
    assert torch.equal(_tokens(b_back), _tokens(byola))


def test_to_official_state_dict_reloads_identically(tmp_path):
    state = L.m2d_full_state(**TINY, decoder_dim=32, decoder_depth=1)
    src = load_encoder(L.write_training_checkpoint(tmp_path / TINY_NAME / "checkpoint-300.pth", state))
    official = to_official_state_dict(src)
    assert set(official) == set(_encoder_part(state)) | {"norm_stats"}
    assert all(torch.equal(official[k], state[k]) for k in official)
    path = L.write_state(tmp_path / TINY_NAME / "exported_enconly.pth", official)
    again = load_encoder(path)
    assert torch.equal(_tokens(again), _tokens(src)) and again.norm_stats == src.norm_stats


# ---------------------------------------------------------------------------------- CLI
def test_convert_command_round_trip(tmp_path, capsys):
    state = L.evar_finetuned(**TINY, n_classes=3)
    src = L.write_state(tmp_path / TINY_NAME / "ft.pth", state, "model")
    assert cli_main(["convert", str(src), str(tmp_path / "k")]) == 0
    printed = capsys.readouterr().out
    assert "licence" not in printed.lower()  # not an official release: no NTT licence note (test_cli_errors.py)
    assert cli_main(["convert", str(tmp_path / "k"), str(tmp_path / "off"), "--to", "official"]) == 0
    exported = list((tmp_path / "off").rglob("*.pth"))
    assert len(exported) == 1 and exported[0].parent.name.startswith("m2d_vit_base-80x64p16x16")
    original, converted = load_encoder(src), load_encoder(exported[0])
    assert torch.equal(_tokens(converted), _tokens(original))
    _assert_loaded(converted.head, original.head.state_dict())

    evil = tmp_path / "evil.pth"
    torch.save({"model": state, "x": warnings.WarningMessage}, evil)
    assert cli_main(["convert", str(evil), str(tmp_path / "e")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert cli_main(["convert", str(evil), str(tmp_path / "e"), "--trust-pickle"]) == 0
    assert (tmp_path / "e" / "model.safetensors").is_file()
    # an existing output is not replaced without --overwrite
    before = (tmp_path / "k" / "model.safetensors").read_bytes()
    assert cli_main(["convert", str(evil), str(tmp_path / "k"), "--trust-pickle"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "k" / "model.safetensors").read_bytes() == before
    assert cli_main(["convert", str(src), str(tmp_path / "k"), "--overwrite"]) == 0


def test_m2d_method_export_loads_as_official_full_file(tmp_path):
    from kikimimi.methods.m2d import M2D

    method = M2D(
        size="tiny",
        input_size=(80, 64),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=1,
        norm_stats=(-6.5, 4.1),
    )
    state = method.export_official_state_dict()
    path = L.write_training_checkpoint(
        tmp_path / "m2d_vit_tiny-80x64p16x16-kikimimi" / "checkpoint-1.pth", state
    )
    bundle = load_encoder(path, size="tiny")
    assert bundle.norm_stats.to_list() == pytest.approx([-6.5, 4.1])
    method.encoder.eval()
    x = torch.randn(2, 1, 80, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(bundle.encoder.forward_tokens(x), method.encoder.forward_tokens(x))
