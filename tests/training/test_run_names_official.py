"""Run-folder names in the official grammar with the official tags for non-default flags
(../shared/docs/fact-sheet-m2d2-2026.md §2, §4, §5): the README's stage-1 and stage-2.1 names are reproduced, and
each masking strategy and hint flag has its tag."""

from __future__ import annotations

import re

import pytest

from kikimimi.checkpoints.names import MASK_STRATEGY_TAGS, format_run_tags, path_tag, try_parse_official_name
from kikimimi.models.vit import ViTConfig
from kikimimi.training import run_folder
from kikimimi.training.run_folder import official_run_tags, run_folder_name
from kikimimi.training.settings import resolve_settings

DATE = "260301"


@pytest.fixture(autouse=True)
def _fixed_date(monkeypatch):
    monkeypatch.setattr(run_folder, "_today", lambda: DATE)


def test_path_initials_and_values() -> None:
    assert path_tag("data/files_A_S_V_S_W_C_X.csv") == "dfASVSWCX"
    assert path_tag("data/cache/m2d_clap_vit_base-80x608p16x16p16kpN-_N_V_E_m_b_2") == "dcmcvbNVEmb2"
    assert format_run_tags([("mr", 0.0), ("s", 7), ("k", 2.5), ("FT", True)]) == "mr0s7k2.5FT"


def test_stage1_readme_name_is_reproduced() -> None:
    s = resolve_settings({"method": "m2d2_stage1", "recipe": "official", "device": "cpu",
                          "data": ["data/files_A_S_V_S_W_C_X.csv"], "text_encoder": "nvembed:/models/nv-embed-v2",
                          "captions": "data/cache/m2d_clap_vit_base-80x608p16x16p16kpN-_N_V_E_m_b_2"})  # fmt: skip
    name = run_folder_name(s)
    # fact sheet §2: …80x608p16x16p16kpN-<yymmdd>-MdfASVSWCXCdcmcvbNVEmb2s7-e300
    assert name == f"m2d_clap_vit_base-80x608p16x16p16kpN-{DATE}-MdfASVSWCXCdcmcvbNVEmb2s7-e300"
    parsed = try_parse_official_name(name)
    assert parsed.input_size == (80, 608) and parsed.extras == ("N",)


def test_stage2_and_2_1_tags() -> None:
    given = {"captions": "c.csv", "text_encoder": "bert:/b", "init_from": "run", "device": "cpu"}
    vit = ViTConfig.from_size("base", input_size=(80, 1001)).to_dict()
    s2 = resolve_settings({**given, "method": "m2d2_stage2", "recipe": "official",
                           "data": ["data/files_A_S_V_S_W_C_A_C_X_t_E_U.csv"]}).updated(vit_config=vit)  # fmt: skip
    assert run_folder_name(s2) == f"m2d_clap_vit_base-80x1001p16x16p16kpBpTI-MdfASVSWCACXtEUs7-{DATE}"
    s21 = resolve_settings({**given, "recipe": "m2d2-stage2.1", "data": ["data/files_w_c_a_c_x_t_e_u.csv"]})
    # fact sheet §4: a 2.1 run's tags …-Mdfwcacxteumr0FT-<yymmdd> (seed 0 is the script's default: no tag)
    assert run_folder_name(s21.updated(vit_config=vit)).endswith(f"pBpTI-Mdfwcacxteumr0FT-{DATE}")
    odd = s2.updated(mask_strategy="random", unfreeze_audio=True, sem_mode=2, input_frames=608, seed=0)
    assert official_run_tags(odd) == "MdfASVSWCACXtEUDur608RtrnAS2"


@pytest.mark.parametrize("strategy", ["random", "dwm", "var", "sgim", "ibm"])
def test_masking_strategy_tags(strategy) -> None:
    s = resolve_settings(
        {"method": "m2d", "data": ["x"], "size": "tiny", "mask_strategy": strategy, "recipe": "official"}
    )
    name = run_folder_name(s)
    if strategy == "random":  # the default: the name is unchanged
        assert name == f"m2d_vit_tiny-80x608p16x16-{DATE}"
    else:
        assert name == f"m2d_vit_tiny-80x608p16x16-{DATE}-{MASK_STRATEGY_TAGS[strategy]}"
    assert set(MASK_STRATEGY_TAGS.values()) == {"Wm", "Vm", "Bm", "Om"}


def test_hint_schedule_tags() -> None:
    s = resolve_settings({"method": "m2d", "data": ["x"], "size": "tiny", "mask_strategy": "dwm", "hint_k": 4,
                          "hint_start_epoch": 10, "hint_ratio": 0.5})  # fmt: skip
    assert official_run_tags(s) == "Wmk4i10a0.5"
    clap = resolve_settings(
        {"method": "m2d_clap", "data": ["x"], "captions": "e.safetensors", "mask_strategy": "ibm", "recipe": "official"}
    )
    assert re.fullmatch(rf"m2d_clap_vit_base-80x608p16x16-{DATE}-Bm", run_folder_name(clap))


def test_absolute_paths_are_abbreviated_from_their_last_parts(tmp_path) -> None:
    s = resolve_settings({"method": "m2d", "data": [str(tmp_path / "data" / "files_A_S.csv")], "recipe": "official"})
    s2 = resolve_settings({"method": "m2d2_stage1", "data": [str(tmp_path / "data" / "files_A_S.csv")],
                           "captions": "e.safetensors", "recipe": "official", "device": "cpu"})  # fmt: skip
    assert official_run_tags(s) == "" and official_run_tags(s2) == "MdfASCes7"
