"""`kikimimi models list|info|fetch|path|remove`, and `kikimimi embed … -m NAME --accept-licence` end to end,
against the local release server of ``tests/model_server.py``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import soundfile as sf
from model_server import (
    m2d_enconly_zip,
    m2d_release_zip,
    url_path,
)

from kikimimi.checkpoints import get_entry
from kikimimi.checkpoints.registry import OFFICIAL_MODELS
from kikimimi.cli import main

MR7 = get_entry("m2d-vit-base-mr7")
ENC = get_entry("m2d-vit-base-mr7-enconly")


def test_list_info_fetch_path_remove(home, server, capsys):
    path = url_path(ENC)
    server.files[path] = m2d_enconly_zip(ENC.folder_name)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert all(e.name in out for e in OFFICIAL_MODELS)
    assert out.splitlines()[0].split() == ["name", "family", "rate", "dims", "head", "size", "licence", "cached"]
    byola = next(line for line in out.splitlines() if line.startswith("byola-v1-d512 "))
    assert "512" in byola and "2.4 MB" in byola and byola.split()[-1] == "no"

    assert main(["models", "info", ENC.name]) == 0
    out = capsys.readouterr().out
    assert f"{server.url}{path}" in out and "evaluation only" in out and "not published" in out

    assert main(["models", "fetch", ENC.name, "--no-progress"]) == 1  # licence not accepted
    assert "--accept-licence" in capsys.readouterr().err and server.requests[path] == 0
    assert main(["models", "fetch", ENC.name, "--accept-licence", "--no-progress"]) == 0
    fetched = capsys.readouterr().out.strip()
    assert fetched.endswith(f"{ENC.folder_name}/weights_enconly.pth") and server.requests[path] == 1

    assert main(["models", "path", ENC.name]) == 0
    assert capsys.readouterr().out.strip() == fetched
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows[ENC.name]["cached"] is True and rows[MR7.name]["cached"] is False
    assert main(["models", "info", ENC.name]) == 0
    assert "recorded on first download" in capsys.readouterr().out

    assert main(["models", "remove", ENC.name]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["models", "path", ENC.name]) == 1
    assert "not cached" in capsys.readouterr().err


def test_unknown_name_exit_code_and_hint(home, capsys):
    assert main(["models", "info", "m2d-vit-base-mr8"]) == 2
    assert "m2d-vit-base-mr7" in capsys.readouterr().err


def test_embed_by_name_end_to_end(home, server, tmp_path, capsys):
    server.files[url_path(MR7)] = m2d_release_zip(MR7.folder_name)
    audio = tmp_path / "my_sounds"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(audio / f"s{i}.wav", (rng.standard_normal(16000) * 0.1).astype(np.float32), 16000)
    out = tmp_path / "emb"
    args = ["embed", str(audio), "-m", "m2d-vit-base-mr7", "-o", str(out), "--no-progress"]
    assert main(args) == 2  # first download needs the licence accepted
    assert "--accept-licence" in capsys.readouterr().err
    assert main([*args, "--accept-licence"]) == 0
    assert np.load(out / "s0.npy").shape == (5 * 32,)
    assert server.requests[url_path(MR7)] == 1


def test_convert_and_finetune_style_resolution_accept_names(home, server, tmp_path, capsys):
    from kikimimi.commands._options import resolve_model
    from kikimimi.commands.eval import add_arguments

    server.files[url_path(ENC)] = m2d_enconly_zip(ENC.folder_name)
    out = tmp_path / "converted"
    assert main(["convert", ENC.name, str(out), "--accept-licence"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    parser = argparse.ArgumentParser()
    add_arguments(parser)  # eval's model list takes names and --accept-licence
    args = parser.parse_args([ENC.name, "logmel", "--task", "t.csv", "-o", "r"])
    assert resolve_model(ENC.name, args).endswith(f"{ENC.folder_name}/weights_enconly.pth")  # cached: no gate
    assert server.requests[url_path(ENC)] == 1
