"""The command line answers at once: `kikimimi --help`, every `kikimimi SUB --help` and `kikimimi info FILE`
import nothing heavy (no torch, no scikit-learn, no transformers, …). Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

#: modules that take a second or more to import (or pull in one that does)
HEAVY = ("torch", "torchaudio", "transformers", "sklearn", "scipy", "matplotlib", "faiss", "onnxruntime",
         "sentence_transformers", "umap", "fastapi", "uvicorn", "librosa")

_PROBE = r"""
import contextlib, io, json, sys
from kikimimi.cli import console_main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = console_main(json.loads(sys.argv[1]))
    except SystemExit as exc:  # --help exits through argparse
        code = exc.code
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue()[:20000]}))
"""


def _probe(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)], capture_output=True,
                          text=True, timeout=120, env={"PATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                                       "HOME": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_imports_nothing_heavy():
    res = _probe(["--help"])
    assert res["code"] == 0 and "search" in res["out"] and res["heavy"] == []


def test_every_sub_command_help_imports_nothing_heavy():
    from kikimimi.cli import COMMAND_MODULES, _load_command

    names = [_load_command(m).NAME for m in COMMAND_MODULES]
    # one interpreter builds every sub-command's help in turn (building the parser loads every command module)
    probe = _PROBE.replace("code = console_main(json.loads(sys.argv[1]))",
                           "code = [console_main([n, '--help']) for n in json.loads(sys.argv[1])]")
    proc = subprocess.run([sys.executable, "-c", probe, json.dumps(names), json.dumps(HEAVY)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["heavy"] == [], f"--help of the sub-commands imports {res['heavy']}"


def test_info_imports_nothing_heavy(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    res = _probe(["info", str(wav)])
    assert res["code"] == 0 and "16000 Hz" in res["out"] and res["heavy"] == []


def test_prep_help_names_the_real_presets():
    from kikimimi.commands.prep import PRESET_NAMES
    from kikimimi.features.frontend import PRESETS

    assert tuple(sorted(PRESETS)) == PRESET_NAMES


@pytest.mark.parametrize("argv", [["-v", "info", "X"], ["info", "-v", "X"], ["info", "--verbose", "-v", "X"]])
def test_verbose_is_a_global_flag(argv):
    from kikimimi.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.verbose >= 1 and args.inputs == ["X"]
