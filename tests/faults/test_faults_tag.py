"""Fault suite: `kikimimi tag` over a folder of good and broken files."""

from __future__ import annotations

from kikimimi.cli import main

from .inputs import fault_folder, named_once, write_tagger


def test_tag_names_every_bad_file_once_and_tags_every_good_one(tmp_path, capsys, fault_report):
    model, labels = write_tagger(tmp_path)
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
    fault_report("tag", bad_named=len(ff.bad), good_tagged=len(ff.good))
