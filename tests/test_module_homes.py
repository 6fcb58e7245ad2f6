"""Issue 26's leftovers: each helper lives where its job is, with a public name; no development-machine paths."""

from __future__ import annotations

import re
from pathlib import Path

import kikimimi

SRC = Path(kikimimi.__file__).parent


def test_frontend_for_lives_with_the_front_ends():
    from kikimimi.checkpoints import official
    from kikimimi.features.frontend import PRESETS, frontend_for

    assert frontend_for("byola", 16000, 64) is PRESETS["byola"]
    assert frontend_for("m2d", 32000, 80) is PRESETS["m2d-32k"]
    assert frontend_for("m2d", 16000, 128).n_mels == 128 and PRESETS["m2d-16k"].n_mels == 80
    assert "frontend_for" not in official.__all__
    assert "def frontend_for" not in (SRC / "checkpoints" / "official.py").read_text()


def test_the_cpu_front_end_cache_is_explicit():
    from kikimimi.features import frontend

    assert not hasattr(frontend, "_MODULE_CACHE")
    frontend.cpu_module.cache_clear()
    config = frontend.get_preset("m2d-16k")
    assert frontend.cpu_module(config) is frontend.cpu_module(config)
    info = frontend.cpu_module.cache_info()
    assert info.hits == 1 and info.currsize == 1 and info.maxsize == 8


def test_quiet_huggingface_has_one_public_home():
    from kikimimi.models import text_loading

    assert "quiet_huggingface" in text_loading.__all__
    users = [p for p in SRC.rglob("*.py") if "import quiet_huggingface" in p.read_text()
             or ", quiet_huggingface" in p.read_text()]
    assert {p.name for p in users} >= {"causal_lm.py", "tiny_lm.py"}
    stale = [p.name for p in SRC.rglob("*.py") if "_quiet_hf" in p.read_text()]
    assert set(stale) <= {"text_loading.py", "captioner.py"}  # the alias, and the captioner until it moves over


def test_no_development_machine_paths_in_the_package():
    pattern = re.compile(r"(?<![\w.])/(home|Users|root|work)/\w")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
