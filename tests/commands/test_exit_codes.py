"""One exit-code rule for every sub-command (kikimimi.commands._exit, docs/usage.md "Exit status"):
0 = done (single files that failed are listed), 1 = nothing could be done, 2 = usage error (missing path,
empty input, bad flag), found before any output is created.

Each sub-command that takes inputs runs in-process on (a) a path that does not exist, (b) an empty folder and,
where it is quick, (c) a folder with one good and one broken audio file.
"""

from __future__ import annotations

import numpy as np
import official_layouts as ol
import pytest
import soundfile as sf
import torch
from clap_fakes import HashTextEncoder, patch_text_encoder, write_tiny_clap2025

from kikimimi.cli import COMMAND_MODULES, console_main
from kikimimi.commands._exit import DONE, NOTHING_DONE, USAGE, batch_status


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny models: an M2D encoder, an AudioSet-style tagger with 3 classes (+ labels CSV), an M2D-CLAP."""
    root = tmp_path_factory.mktemp("models")
    enc = root / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    enc.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2), enc / "w.pth")
    tagger = root / "m2d_vit_base-80x1001p16x16-221006-mr7_as_46ab246d"
    tagger.mkdir()
    torch.save(ol.evar_finetuned(embed_dim=64, depth=2, n_classes=3), tagger / "weights_ep69it3124-0.48494.pth")
    labels = root / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/c,Cat\n1,/m/a,Alarm\n2,/m/b,Bird\n")
    return {"m2d": enc / "w.pth", "tagger": tagger / "weights_ep69it3124-0.48494.pth", "labels": labels,
            "clap": write_tiny_clap2025(root / "clap")}


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """``{"missing": path, "empty": empty folder, "mixed": folder with good.wav + broken.wav}``."""
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    empty, mixed = tmp_path / "empty", tmp_path / "mixed"
    empty.mkdir()
    mixed.mkdir()
    sf.write(mixed / "good.wav", (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32), 16000)
    (mixed / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return {"missing": tmp_path / "no-such-input", "empty": empty, "mixed": mixed}


def _argv(name, x, out, m):
    """The command line of sub-command ``name`` with input ``x`` and output ``out`` (``m``: the models)."""
    x, out = str(x), str(out)
    return {
        "info": ["info", x],
        "prep": ["prep", x, "-o", out, "--workers", "1", "--quiet"],
        "embed": ["embed", x, "-m", str(m["m2d"]), "-o", out, "--no-progress"],
        "tag": ["tag", x, "-m", str(m["tagger"]), "--labels", str(m["labels"]), "--device", "cpu", "--out",
                f"{out}/tags.jsonl"],
        "zeroshot": ["zeroshot", str(m["clap"]), x, "--labels", "a dog,rain", "--out", f"{out}/zs.jsonl"],
        "index": ["index", x, "-m", str(m["clap"]), "-o", out],
        "search": ["search", x, "a dog"],
        "serve": ["serve", x, "-m", str(m["clap"]), "--port", "8765"],
        "plot": ["plot", x, "--labels", str(m["labels"]), "-o", f"{out}/map.png"],
        "convert": ["convert", x, out],
        "card": ["card", x, "-o", f"{out}/README.md"],
        "export": ["export", "onnx", x, f"{out}/m.onnx"],
        "eval": ["eval", str(m["m2d"]), "--task", x, "-o", out],
        "finetune": ["finetune", str(m["m2d"]), x, "--out", out],
        "retrieval": ["retrieval", str(m["clap"]), x, "-o", f"{out}/metrics.json"],
        "pretrain": ["pretrain", "--method", "m2d", "--data", x, "--out", out, "--device", "cpu"],
        "train-captioner": ["train-captioner", "--audio-model", str(m["m2d"]), "--captions", x, "--out", out],
        "caption": ["caption", x],  # no model: kikimimi's packaged captioner (checked after the inputs)
        "ask": ["ask", x, "what is it?"],
        "evidence": ["evidence", x, "--clap", str(m["clap"]), "-o", out, "--device", "cpu", "--quiet"],
        "chat": ["chat", x, "--clap", str(m["clap"])],
        "describe": ["describe", x, "--clap", str(m["clap"])],
        "eval-captions": ["eval-captions", x, x],
    }[name]


#: sub-commands with inputs, and whether case (c) (one good + one broken audio file) is quick enough to run
WITH_INPUTS = {"info": True, "prep": True, "embed": True, "tag": True, "zeroshot": True, "index": True,
               "search": False, "serve": False, "plot": False, "convert": False, "export": False, "eval": False,
               "card": False, "finetune": False, "retrieval": False, "pretrain": False, "train-captioner": False,
               "caption": False, "ask": False, "eval-captions": False, "evidence": True, "chat": False,
               "describe": False}
#: sub-commands without input paths (nothing to test here)
NO_INPUTS = {"demo", "models", "data"}


def test_every_sub_command_is_in_the_table():
    from kikimimi.cli import _load_command

    names = {_load_command(m).NAME for m in COMMAND_MODULES}
    assert names == set(WITH_INPUTS) | NO_INPUTS


def test_the_batch_rule():
    assert (batch_status(3, 0), batch_status(1, 5), batch_status(0, 2), batch_status(0, 0)) == \
           (DONE, DONE, NOTHING_DONE, DONE)


def _one_line_error(err: str, name: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith((f"kikimimi {name}: error: ", "error: ")), err


@pytest.mark.parametrize("name", sorted(WITH_INPUTS))
def test_a_missing_path_is_a_usage_error_and_creates_nothing(name, models, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert console_main(_argv(name, inputs["missing"], out, models)) == USAGE
    err = capsys.readouterr().err
    _one_line_error(err, name)
    assert str(inputs['missing']) in err and "no such " in err, err
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(WITH_INPUTS))
def test_an_empty_folder_is_a_usage_error_and_creates_nothing(name, models, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert console_main(_argv(name, inputs["empty"], out, models)) == USAGE
    _one_line_error(capsys.readouterr().err, name)
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(n for n, quick in WITH_INPUTS.items() if quick))
def test_one_good_and_one_broken_file_is_done_with_the_broken_one_listed(name, models, inputs, tmp_path, capsys):
    assert console_main(_argv(name, inputs["mixed"], tmp_path / "out", models)) == DONE
    err = capsys.readouterr().err
    assert "broken.wav" in err and "good.wav" not in err.replace("broken.wav", ""), err


@pytest.mark.parametrize("name", sorted(n for n, quick in WITH_INPUTS.items() if quick))
def test_only_broken_files_means_nothing_done(name, models, inputs, tmp_path, capsys):
    (inputs["mixed"] / "good.wav").unlink()
    assert console_main(_argv(name, inputs["mixed"], tmp_path / "out", models)) == NOTHING_DONE
    assert "broken.wav" in capsys.readouterr().err
