"""Fault suite: `kikimimi retrieval` over captions that point at good and broken files."""

from __future__ import annotations

import csv
import json

from clap_fakes import HashTextEncoder, patch_text_encoder, write_tiny_clap2025

from kikimimi.cli import main

from .inputs import fault_folder, named_once


def _captions(path, files) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption"])
        for i, p in enumerate(files):
            w.writerows([[p.name, f"a sound number {i}"], [p.name, f"clip {i} can be heard"]])


def test_retrieval_names_every_bad_file_once_and_scores_every_good_one(tmp_path, capsys, monkeypatch, fault_report):
    ckpt = write_tiny_clap2025(tmp_path / "models")
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    ff = fault_folder(tmp_path / "in")
    _captions(ff.root / "captions.csv", ff.all)
    metrics_path = tmp_path / "metrics.json"
    assert main(["retrieval", str(ckpt), str(ff.root / "captions.csv"), "-o", str(metrics_path),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert all(named_once(err, bad) for bad in ff.bad), err
    metrics = json.loads(metrics_path.read_text())
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in metrics["errors"]) == sorted(p.name for p in ff.bad)
    assert metrics["n_audio"] == len(ff.good) and metrics["n_captions"] == 2 * len(ff.good)
    # nothing could be read: exit status 1, every file named
    _captions(ff.root / "bad.csv", sorted(ff.bad))
    assert main(["retrieval", str(ckpt), str(ff.root / "bad.csv"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert all(named_once(err, bad) for bad in ff.bad), err
    fault_report("retrieval", bad_named=len(ff.bad), good_scored=len(ff.good))
