"""The `kikimimi` program reports bad input as one line (no traceback) and survives a closed pipe."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kikimimi.cli import INPUT_ERROR_EXIT, console_main
from kikimimi.data.corpus import resolve_corpus


def test_missing_training_data_is_named_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ValueError, match="no such file or folder: '.*nope'"):
        resolve_corpus([tmp_path / "nope"])
    code = console_main(["pretrain", "--method", "m2d", "--data", str(tmp_path / "nope"), "--out",
                         str(tmp_path / "runs"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == INPUT_ERROR_EXIT
    assert err.startswith("kikimimi pretrain: error: --data: no such file or folder") and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_resume_of_nothing_is_one_line(tmp_path, capsys):
    assert console_main(["pretrain", "--resume", str(tmp_path / "none")]) == INPUT_ERROR_EXIT
    assert "kikimimi pretrain: error: --resume" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(tmp_path):
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    files = []
    for i in range(1500):  # more output than a pipe buffers (64 KiB), so the writer meets the closed pipe
        files.append(tmp_path / f"clip-{i:04d}.wav")
        files[-1].write_bytes(wav.read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "kikimimi", "info", *map(str, files)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_a_missing_optional_extra_names_the_pip_install(monkeypatch, capsys):
    import kikimimi.cli as cli

    def needs_sklearn(argv):
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    monkeypatch.setattr(cli, "main", needs_sklearn)
    assert cli.console_main(["eval", "m.pth", "--task", "t.csv"]) == INPUT_ERROR_EXIT
    assert 'kikimimi eval: error: this needs the optional package \'sklearn\': pip install "kikimimi[eval]"' in \
        capsys.readouterr().err
    monkeypatch.setattr(cli, "main", lambda argv: (_ for _ in ()).throw(ModuleNotFoundError("x", name="not_extra")))
    with pytest.raises(ModuleNotFoundError):  # a missing module that is no extra is a bug: traceback
        cli.console_main(["eval"])
