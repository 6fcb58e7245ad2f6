"""Fault suite: `kikimimi zeroshot` over a folder of good and broken files."""

from __future__ import annotations

import json
from pathlib import Path

from clap_fakes import HashTextEncoder, patch_text_encoder, write_tiny_clap2025

from kikimimi.cli import main

from .inputs import fault_folder, named_once


def test_zeroshot_names_every_bad_file_once_and_classifies_every_good_one(tmp_path, capsys, monkeypatch,
                                                                          fault_report):
    ckpt = write_tiny_clap2025(tmp_path / "models")
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    ff = fault_folder(tmp_path / "in")
    argv = ["zeroshot", str(ckpt), str(ff.root), "--labels", "dog barking,rain,a tone", "--json", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert all(named_once(out.err, bad) for bad in ff.bad), out.err
    results = json.loads(out.out)["results"]
    assert sorted(Path(r["file"]).name for r in results) == sorted(p.name for p in ff.good)
    assert all(r["predicted"] in ("dog barking", "rain", "a tone") for r in results)
    # nothing could be classified: exit status 1, every file named
    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    for bad in ff.bad:
        (only_bad / bad.name).write_bytes(bad.read_bytes())
    assert main(["zeroshot", str(ckpt), str(only_bad), "--labels", "a,b", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert all(named_once(err, bad) for bad in ff.bad), err
    fault_report("zeroshot", bad_named=len(ff.bad), good_classified=len(ff.good))
