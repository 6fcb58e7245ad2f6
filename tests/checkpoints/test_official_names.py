"""The official name grammar (kikimimi.checkpoints.names): what the formatters write, the parser reads back."""

from __future__ import annotations

import pytest

from kikimimi.checkpoints.names import (
    BYOLA_V2_FEATURE_D,
    format_byola_name,
    format_m2d_name,
    parse_official_name,
    text_encoder_code,
    vit_size_name,
)
from kikimimi.models.vit import ViTConfig


@pytest.mark.parametrize(
    ("model_cls", "input_size", "patch_size", "sample_rate", "extras", "suffix"),
    [
        ("m2d_vit_base", (80, 608), (16, 16), 16000, (), "221006-mr7"),
        ("m2d_vit_tiny", (80, 208), (16, 16), 16000, (), "demo"),
        ("m2d_vit_base", (80, 608), (16, 4), 32000, (), "240101"),
        ("m2d_clap_vit_base", (80, 1001), (16, 16), 16000, ("B", "TI"), "2025"),
        ("m2d_s_vit_base", (80, 505), (16, 16), 16000, ("N",), None),
    ],
)
def test_m2d_names_round_trip(model_cls, input_size, patch_size, sample_rate, extras, suffix):
    name = format_m2d_name(model_cls, input_size, patch_size, sample_rate, extras, suffix)
    parsed = parse_official_name(name)
    assert parsed.family == "m2d" and parsed.model_cls == model_cls
    assert parsed.input_size == input_size and parsed.patch_size == patch_size
    assert parsed.sample_rate == sample_rate and parsed.extras == extras
    # as a run folder: the loaders read the parent folder of the weight file
    assert parse_official_name(f"/runs/{name}/checkpoint-300.pth").input_size == input_size


def test_m2d_name_layout():
    plain = format_m2d_name("m2d_vit_base", (80, 608), (16, 16), suffix="kikimimi")
    assert plain == "m2d_vit_base-80x608p16x16-kikimimi"
    assert format_m2d_name("m2d_vit_base", (80, 608), (16, 4), 32000) == "m2d_vit_base-80x608p16x4p32k"
    with_extras = format_m2d_name("m2d_clap_vit_tiny", (80, 64), (16, 16), 16000, ("B", "TI"), "261201")
    assert with_extras == "m2d_clap_vit_tiny-80x64p16x16p16kpBpTI-261201"  # the rate token precedes the extras


@pytest.mark.parametrize(("version", "d", "feature_d"), [(1, 512, 512), (1, 2048, 2048), (2, 2048, BYOLA_V2_FEATURE_D)])
def test_byola_names_round_trip(version, d, feature_d):
    for suffix in (None, "240101"):
        name = format_byola_name(version, (64, 96), d, suffix)
        parsed = parse_official_name(name)
        assert parsed.family == "byola" and parsed.byola_version == version
        assert parsed.input_size == (64, 96) and parsed.feature_d == feature_d
    assert format_byola_name(1, (64, 96), 512) == "AudioNTT2020-BYOLA-64x96d512"


def test_name_extras_and_sizes():
    assert [text_encoder_code(s) for s in ("gte:/m", "bert:/m", "llm:/m#eos", "smollm2#eos", None, "minilm")] == [
        "A", "B", "N", "N", "X", "X"]  # fmt: skip
    assert vit_size_name(ViTConfig.from_size("tiny")) == "tiny"
    assert vit_size_name(ViTConfig(embed_dim=256, depth=4, num_heads=4)) == "d256"
