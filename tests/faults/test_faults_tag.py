"""Fault suite: `kikimimi tag` over a folder of good and broken files."""

from __future__ import annotations

import official_layouts as ol
import torch

from kikimimi.cli import main

from .inputs import fault_folder, named_once


def test_tag_names_every_bad_file_once_and_tags_every_good_one(tmp_path, capsys):
    folder = tmp_path / "m2d_vit_base-80x1001p16x16-221006-mr7_as_46ab246d"
    folder.mkdir()
    model = folder / "weights_ep69it3124-0.48494.pth"
    torch.save(ol.evar_finetuned(embed_dim=64, depth=2, n_classes=3), model)
    labels = tmp_path / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/c,Cat\n1,/m/a,Alarm\n2,/m/b,Bird\n")
    ff = fault_folder(tmp_path / "in")
    assert main(["tag", str(ff.root), "-m", str(model), "--labels", str(labels), "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert all(named_once(out.err, bad) for bad in ff.bad), out.err
    tagged = [line for line in out.out.splitlines() if not line.startswith(" ")]
    assert sorted(tagged) == sorted(str(p) for p in ff.good)
    assert sum("Bird" in line for line in out.out.splitlines()) == len(ff.good)  # one window each, top-3 of 3
    # nothing could be tagged: exit status 1, every file named
    assert main(["tag", *map(str, sorted(ff.bad)), "-m", str(model), "--labels", str(labels),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert all(named_once(err, bad) for bad in ff.bad) and "no file could be tagged" in err
    print(f"fault suite tag: {len(ff.bad)} bad inputs named, {len(ff.good)} good tagged")
