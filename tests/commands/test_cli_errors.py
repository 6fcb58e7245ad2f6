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


# --- one line per problem (issue 33.6) ------------------------------------------------------------------------

def test_the_licence_note_only_for_official_releases(tmp_path, capsys):
    import official_layouts as ol
    import torch

    from kikimimi.commands.convert import official_release

    state = ol.m2d_encoder_state(embed_dim=64, depth=2)
    official = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"  # a release's folder name
    trained = tmp_path / "runs" / "m2d_vit_base-80x608p16x16-261207-mine"  # a run of the user's
    for folder in (official, trained):
        folder.mkdir(parents=True)
        torch.save(state, folder / "checkpoint-10.pth")
    assert console_main(["convert", str(official / "checkpoint-10.pth"), str(tmp_path / "a")]) == 0
    assert "note: Weights converted from official NTT releases" in capsys.readouterr().out
    assert console_main(["convert", str(tmp_path / "a"), str(tmp_path / "a2")]) == 0  # source kept in config.json
    assert "NTT" in capsys.readouterr().out
    assert console_main(["convert", str(trained / "checkpoint-10.pth"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote ") and len(out.splitlines()) == 1 and "note:" not in out
    assert official_release(None, "m2d-clap-2025").name == "m2d-clap-2025"
    assert official_release(None, "AudioNTT2020-BYOLA-64x96d512.pth").name == "byola-v1-d512"
    assert official_release(str(trained / "checkpoint-10.pth"), tmp_path / "b") is None


def test_a_missing_input_is_one_line_and_creates_no_output(tmp_path, capsys):
    out = tmp_path / "cache"
    assert console_main(["prep", str(tmp_path / "wrong" / "path"), "-o", str(out)]) == INPUT_ERROR_EXIT
    err = capsys.readouterr().err
    assert err == f"kikimimi prep: error: no such file or folder: {tmp_path / 'wrong' / 'path'}\n"
    assert not out.exists()


def _warn_from(filename: str, message: str) -> None:
    """Raise ``message`` as a UserWarning that seems to come from code in ``filename``."""
    import warnings

    warnings.warn_explicit(message, UserWarning, filename, 462, module="x", registry={})


@pytest.mark.parametrize("verbose", [False, True])
def test_warnings_are_one_line_without_source_paths(monkeypatch, capsys, verbose):
    import kikimimi.cli as cli

    def noisy(argv):
        _warn_from("/venv/lib/python3.12/site-packages/torch/hub.py", "third-party chatter\n  with a second line")
        _warn_from(cli.__file__.replace("cli.py", "checkpoints/byola.py"), "no normalisation statistics in 'x.pth'")
        return 0

    monkeypatch.setattr(cli, "main", noisy)
    assert cli.console_main(["embed", "a.wav", *(["-v"] if verbose else [])]) == 0
    err = capsys.readouterr().err
    assert "kikimimi embed: warning: no normalisation statistics in 'x.pth'\n" in err
    assert ("torch: third-party chatter with a second line (UserWarning)" in err) == verbose
    assert "hub.py" not in err and "byola.py" not in err and ":462" not in err
    assert len(err.splitlines()) == (2 if verbose else 1)


def test_the_java_tokenizer_chatter_is_silenced(capfd):
    import shutil

    pytest.importorskip("pycocoevalcap")
    if shutil.which("java") is None:
        pytest.skip("needs Java")
    from kikimimi.evaluation.caption_metrics import _tokenize

    assert _tokenize({"a": ["A dog barks."]}, "ptb") == ({"a": ["a dog barks"]}, "ptb")
    captured = capfd.readouterr()
    assert "PTBTokenizer" not in captured.err + captured.out
