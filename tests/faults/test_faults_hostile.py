"""Hostile inputs: a checkpoint whose pickle runs code, checkpoints claiming enormous tensors, an input list of a
million missing files, and paths with spaces, unicode and a leading dash. All through the real program entry
(:func:`kikimimi.cli.console_main`), as a user meets them."""

from __future__ import annotations

import csv
import json
import resource
import struct
import zipfile
from pathlib import Path

import official_layouts as ol
import pytest
import soundfile as sf
import torch
from clap_fakes import HashTextEncoder, patch_text_encoder, write_tiny_clap2025

from kikimimi.cli import console_main

from .inputs import RATE, tone


class _RunsCode:
    """Unpickling this runs ``exec``: it creates ``marker`` (a harmless stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Inputs every command needs, and an official-looking checkpoint whose pickle would create ``marker``."""
    root = tmp_path_factory.mktemp("hostile")
    audio = root / "audio"
    audio.mkdir()
    for i in range(2):
        sf.write(audio / f"clip {i}.wav", tone(1.0, 300.0 * (i + 1)), RATE, subtype="PCM_16")
    task = root / "task"
    for label in ("low", "high"):
        (task / label).mkdir(parents=True)
        for i in range(2):
            sf.write(task / label / f"{i}.wav", tone(1.0, 200.0 if label == "low" else 2000.0), RATE)
    marker = root / "the-pickle-ran"
    evil = root / "m2d_vit_base-80x608p16x16-221006-mr7_enconly" / "checkpoint-300.pth"
    evil.parent.mkdir()
    torch.save({"model": ol.m2d_encoder_state(embed_dim=64, depth=2), "args": _RunsCode(marker)}, evil)
    labels = root / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/c,Cat\n1,/m/a,Alarm\n")
    captions = root / "captions.csv"
    captions.write_text("file_name,caption\n" + "".join(f"audio/clip {i}.wav,a tone\n" for i in range(2)))
    index = root / "index"
    index.mkdir()
    (index / "manifest.json").write_text(json.dumps({"format": "kikimimi-search-index/1", "root": str(audio),
                                                     "model": str(evil), "dim": 0, "entries": [], "errors": {}}))
    return {"root": root, "audio": audio, "task": task, "evil": evil, "marker": marker, "labels": labels,
            "captions": captions, "index": index}


def test_the_payload_is_live_when_trusted(world, tmp_path):
    """Guard for the test below: loading the file with the full unpickler does run its code."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"args": _RunsCode(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


COMMANDS = {
    "embed": lambda w: ["embed", str(w["audio"]), "-m", str(w["evil"]), "-o", str(w["root"] / "o-embed")],
    "eval": lambda w: ["eval", str(w["evil"]), "--task", str(w["task"]), "-o", str(w["root"] / "o-eval"),
                       "--no-baselines", "--no-plots", "--seeds", "1"],
    "finetune": lambda w: ["finetune", str(w["evil"]), str(w["task"]), "--out", str(w["root"] / "o-ft"),
                           "--epochs", "1", "--quiet"],
    "index": lambda w: ["index", str(w["audio"]), "-m", str(w["evil"]), "-o", str(w["root"] / "o-index")],
    "search": lambda w: ["search", str(w["index"]), "a tone", "-m", str(w["evil"])],
    "zeroshot": lambda w: ["zeroshot", str(w["evil"]), str(w["audio"]), "--labels", "a,b"],
    "retrieval": lambda w: ["retrieval", str(w["evil"]), str(w["captions"])],
    "tag": lambda w: ["tag", str(w["audio"]), "-m", str(w["evil"]), "--labels", str(w["labels"])],
    "convert": lambda w: ["convert", str(w["evil"]), str(w["root"] / "o-convert")],
}  # `plot` takes embeddings, not a model


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_checkpoint_whose_pickle_runs_code_is_refused_by_every_command(command, world, capsys):
    code = console_main([*COMMANDS[command](world), "--device", "cpu"] if command != "convert"
                        else COMMANDS[command](world))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--trust-pickle" in err and "exec" in err, err
    assert not world["marker"].exists(), f"`kikimimi {command}` ran the pickled code"


# --------------------------------------------------------------------------------------------
# Checkpoints that claim enormous tensors
# --------------------------------------------------------------------------------------------

def _torch_zip_claiming(path: Path, elements: int) -> Path:
    """A real ``torch.save`` zip whose one tensor (and its storage) claim ``elements`` floats; 16 bytes stored."""
    small = path.with_suffix(".small")
    torch.save({"model": {"pos_embed": torch.zeros(4)}}, small)
    big = b"\x8a\x06" + elements.to_bytes(6, "little", signed=True)  # pickle LONG1
    with zipfile.ZipFile(small) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                storage, size = b"X\x03\x00\x00\x00cpuq\x08K\x04", b"K\x00K\x04\x85"
                assert data.count(storage) == 1 and data.count(size) == 1, "torch changed its pickle layout"
                data = data.replace(storage, storage[:-2] + big).replace(size, b"K\x00" + big + b"\x85")
            zout.writestr(info, data)
    return path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_torch_file_claiming_a_trillion_elements_is_refused_without_allocating(world, tmp_path, capsys):
    folder = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    huge = _torch_zip_claiming(folder / "checkpoint-300.pth", 10**12)  # 4 TB of float32
    before = _peak_rss_mb()
    code = console_main(["embed", str(world["audio"]), "-m", str(huge), "-o", str(tmp_path / "out"), "--device",
                         "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "claims more data than the file stores" in err and str(huge) in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert _peak_rss_mb() - before < 1024  # nothing near the claimed size was allocated


def _kikimimi_folder(tmp_path: Path, capsys) -> Path:
    src = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly" / "checkpoint-300.pth"
    src.parent.mkdir()
    torch.save({"model": ol.m2d_encoder_state(embed_dim=64, depth=2)}, src)
    assert console_main(["convert", str(src), str(tmp_path / "ours")]) == 0
    capsys.readouterr()
    return tmp_path / "ours"


def test_a_safetensors_header_claiming_enormous_shapes_is_refused_without_allocating(world, tmp_path, capsys):
    ours = _kikimimi_folder(tmp_path, capsys)
    weights = ours / "model.safetensors"
    header = json.dumps({"encoder.pos_embed": {"dtype": "F32", "shape": [10**6, 10**6],
                                               "data_offsets": [0, 4 * 10**12]}}).encode()
    weights.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    before = _peak_rss_mb()
    code = console_main(["embed", str(world["audio"]), "-m", str(ours), "-o", str(tmp_path / "out"), "--device",
                         "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "tensor 'encoder.pos_embed' claims shape [1000000, 1000000]" in err and "16 bytes" in err, err
    assert _peak_rss_mb() - before < 1024
    # a header length of 2^60 bytes
    weights.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    assert console_main(["embed", str(world["audio"]), "-m", str(ours), "-o", str(tmp_path / "o2")]) == 2
    assert "the header claims 1152921504606846976 bytes but the file holds 10 bytes" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# A list of a great many missing files
# --------------------------------------------------------------------------------------------

def _missing_list(path: Path, rows: int) -> Path:
    with open(path, "w", newline="") as f:
        f.write("file_name\n")
        f.writelines(f"not-here/clip{i:07d}.wav\n" for i in range(rows))
    return path


def test_prep_of_a_list_of_200k_missing_files_fails_with_a_summary(tmp_path, capsys):
    """200,000 rows keep the test short; a million rows behave the same (`kikimimi prep` of a 1M-row list: 33 s
    on the quiet 2-core dev box, 2026-12-02, nearly all of it reading the list; before: still printing after 5
    minutes)."""
    listing = _missing_list(tmp_path / "list.csv", 200_000)
    assert console_main(["prep", str(listing), "-o", str(tmp_path / "cache"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 + 20 + 1, err[:30]  # the message, 20 names, the count of the rest
    assert "none of the 200,000 input files exists" in err[0] and str(tmp_path) in err[0]
    assert err[1].strip() == str(tmp_path / "not-here" / "clip0000000.wav")
    assert err[-1].strip() == "… and 199,980 more"
    assert not (tmp_path / "cache" / "manifest.csv").exists()


@pytest.mark.parametrize("command", ["zeroshot", "tag"])
def test_commands_given_a_list_of_missing_files_fail_with_a_summary(command, world, tmp_path, capsys, monkeypatch):
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    listing = _missing_list(tmp_path / "list.csv", 30_000)
    clap = write_tiny_clap2025(tmp_path / "clap")
    argv = {"zeroshot": ["zeroshot", str(clap), str(listing), "--labels", "a,b"],
            "tag": ["tag", str(listing), "-m", str(clap), "--labels", str(world["labels"])]}[command]
    assert console_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 22 and "none of the 30,000 input files exists" in err[0] and "29,980 more" in err[-1]
    # some present, many missing: the present ones are processed, the missing ones summarised, not listed
    with open(listing, "a") as f:
        f.write(f"{world['audio'] / 'clip 0.wav'}\n")
    if command == "tag":
        return  # tag needs a tagging head; its summary of missing files is the same code path as zeroshot's
    assert console_main(argv) == 0
    captured = capsys.readouterr()
    assert "clip 0.wav" in captured.out and "error: 30,000 input files do not exist:" in captured.err
    assert len(captured.err.strip().splitlines()) == 1 + 20 + 1


def test_embed_given_a_list_of_missing_files_fails_with_a_summary(tmp_path, capsys):
    """embed plans its outputs with prep's :func:`~kikimimi.features.prep_cache.plan_outputs`, which refuses it."""
    listing = _missing_list(tmp_path / "list.csv", 30_000)
    folder = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2), folder / "w.pth")
    code = console_main(["embed", str(listing), "-m", str(folder / "w.pth"), "-o", str(tmp_path / "out"),
                         "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 22 and "none of the 30,000 input files exists" in err[0], (code, err[:3])


# --------------------------------------------------------------------------------------------
# Names with spaces, unicode and a leading dash
# --------------------------------------------------------------------------------------------

def test_paths_with_spaces_unicode_and_a_leading_dash(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ["-x.wav", "-ünï côde.wav", "a b.wav"]
    for i, name in enumerate(names):
        sf.write(tmp_path / name, tone(0.5, 400.0 + 100 * i), RATE, subtype="PCM_16")
    # after `--`, and as ./-name
    assert console_main(["prep", "-o", "cache", "--quiet", "--", "-x.wav", "./-ünï côde.wav", "a b.wav"]) == 0
    with open(tmp_path / "cache" / "manifest.csv", newline="") as f:
        assert sorted(Path(r["source"]).name for r in csv.DictReader(f)) == sorted(names)
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    clap = write_tiny_clap2025(tmp_path / "clap")
    assert console_main(["zeroshot", str(clap), "--labels", "a,b", "--json", "--", *names]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["file"] for r in results] == names
    # a folder holding such names, indexed and searched
    folder = tmp_path / "lib"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes((tmp_path / name).read_bytes())
    assert console_main(["index", "./lib", "-m", str(clap), "-o", "./-idx", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert console_main(["search", "--json", "--", "./-idx", "-a tone"]) == 0  # a query that starts with a dash
    hits = json.loads(capsys.readouterr().out)["results"]
    assert sorted(h["key"] for h in hits) == sorted(names)
