"""kikimimi.inference.results_log: resumable JSON-lines results (torn lines, settings, one writer)."""

from __future__ import annotations

import json

import pytest

from kikimimi.fileio import OutputInUseError
from kikimimi.inference.results_log import FORMAT, ResultsLog, ResultsLogError


def test_a_torn_last_line_is_cut_and_finished_files_are_kept(tmp_path):
    path = tmp_path / "out" / "r.jsonl"
    with ResultsLog(path, "tag", {"k": 1}) as log:
        log.append({"file": "a.wav", "x": 1})
        log.append({"file": "b.wav", "x": 2})
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"file": "c.wav", "x"')  # a kill in the middle of a write
    with ResultsLog(path, "tag", {"k": 1}) as log:
        assert log.done == {"a.wav", "b.wav"}
        assert path.read_bytes() == whole
        log.append({"file": "c.wav", "x": 3})
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert {k: header[k] for k in ("format", "command", "settings")} == {"format": FORMAT, "command": "tag",
                                                                         "settings": {"k": 1}}
    assert [json.loads(line)["file"] for line in lines[1:]] == ["a.wav", "b.wav", "c.wav"]


def test_other_settings_are_refused_by_name_and_overwrite_starts_again(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsLog(path, "zeroshot", {"labels": ["a", "b"], "top": 2}) as log:
        log.append({"file": "a.wav"})
    with pytest.raises(ResultsLogError, match=r"other settings \(labels\)"):
        ResultsLog(path, "zeroshot", {"labels": ["a", "c"], "top": 2}).open()
    with ResultsLog(path, "zeroshot", {"labels": ["a", "c"], "top": 2}, overwrite=True) as log:
        assert log.done == set()
    assert len(path.read_text().splitlines()) == 1


def test_a_foreign_file_is_not_overwritten_and_an_empty_one_restarts(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text("my own notes\n")
    with pytest.raises(ResultsLogError, match="not a kikimimi results file"):
        ResultsLog(path, "tag", {}).open()
    assert path.read_text() == "my own notes\n"
    path.write_bytes(b'{"format": "kikim')  # killed while writing the header
    with ResultsLog(path, "tag", {}) as log:
        assert log.done == set()
    assert json.loads(path.read_text())["format"] == FORMAT


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsLog(path, "tag", {}), pytest.raises(OutputInUseError, match="in use"):
        ResultsLog(path, "tag", {}).open()
