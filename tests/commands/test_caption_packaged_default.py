"""`kikimimi caption FILE` with no model uses kikimimi's packaged ``open-captioner-tiny`` and says so in one line;
the captioner can also be named (positional or ``-m``); `kikimimi ask` with no model falls back to the packaged CLAP
and captioner the same way, and takes the captioner's name for its end-to-end mode. Skipped, saying so, when this
checkout has no packaged captioner folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi.checkpoints import registry
from kikimimi.checkpoints.registry import PACKAGED_MODELS
from kikimimi.cli import main

NAME = "open-captioner-tiny"
FOLDER = Path(next(e for e in PACKAGED_MODELS if e.name == NAME).url)
pytestmark = [pytest.mark.skipif(not (FOLDER / "captioner.json").is_file(),
                                 reason=f"the packaged captioner folder {FOLDER} is absent in this checkout"),
              pytest.mark.usefixtures("offline_packaged")]
USING = f"using kikimimi's packaged open model '{NAME}'"


@pytest.fixture
def clip(tmp_path) -> Path:
    t = np.arange(32000) / 16000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.4 * np.sin(2 * np.pi * 440.0 * t) * np.exp(-6.0 * (t % 0.5))).astype(np.float32), 16000)
    return path


def _caption_lines(capsys) -> tuple[list[str], str]:
    out = capsys.readouterr()
    return [line for line in out.out.splitlines() if line.strip()], out.err


def test_caption_with_no_model_uses_the_packaged_captioner(clip, capsys):
    assert main(["caption", str(clip)]) == 0
    lines, err = _caption_lines(capsys)
    assert [line for line in err.splitlines() if USING in line] == [next(iter(err.splitlines()))]
    assert len(lines) == 1 and lines[0].startswith(f"{clip}\t") and lines[0].split("\t")[1].strip()
    for argv in (["caption", "-m", NAME, str(clip)], ["caption", NAME, str(clip)]):  # named: the same caption
        assert main(argv) == 0
        named, err = _caption_lines(capsys)
        assert named == lines and USING not in err


def test_caption_without_a_packaged_captioner_asks_for_one(clip, capsys, monkeypatch):
    assert main(["caption", str(FOLDER)]) == 2  # a captioner but no audio
    assert "give the audio to caption after the captioner" in capsys.readouterr().err
    monkeypatch.setattr(registry, "default_packaged_model", lambda kind: None)
    assert main(["caption", str(clip)]) == 2
    assert "give one with -m" in capsys.readouterr().err


def test_ask_defaults_to_the_packaged_models_and_takes_the_captioner_by_name(clip, capsys, tmp_path):
    saved = tmp_path / "tone.evidence.json"
    assert main(["ask", str(clip), "What is it?", "--json", "--save-evidence", str(saved)]) == 0
    out = capsys.readouterr()
    assert "no --clap given: using kikimimi's packaged open model 'open-clap-tiny'" in out.err
    assert f"no --captioner given: {USING}" in out.err
    assert json.loads(out.out)["results"][0]["answer"]["text"]
    evidence = json.loads(saved.read_text())
    assert evidence["models"]["clap"] == "open-clap-tiny" and evidence["models"]["captioner"] == NAME
    assert main(["ask", NAME, str(clip), "Describe this sound."]) == 0  # the end-to-end captioner, by name
    lines, err = _caption_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"{clip}\t") and USING not in err


def test_a_hub_repository_is_read_as_the_captioner_not_as_audio(tmp_path):
    from kikimimi.commands._options import names_captioner

    assert names_captioner("hf://someone/a-captioner@main")
    assert not names_captioner(str(tmp_path / "clip.wav"))  # a missing path is audio (reported as missing later)
    (tmp_path / "cap").mkdir()
    assert not names_captioner(str(tmp_path / "cap"))  # a folder without captioner.json
    (tmp_path / "cap" / "captioner.json").write_text("{}")
    assert names_captioner(str(tmp_path / "cap"))
