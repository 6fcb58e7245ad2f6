"""Pure logic of the open suite's audio–language benchmark (benchmarks/open_suite/run_clap.py, clap_report.py).

No training and no model: caption sides, held-out prompts, prompt-ensemble scoring, chance levels, tables, recipes.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "open_suite"
sys.path.insert(0, str(SUITE))

import clap_report as cr  # noqa: E402
import run_clap  # noqa: E402


def _rows() -> list[dict[str, str]]:
    return [
        {"file_name": "audio/a.wav", "caption": "a kick drum hit", "split": "train", "template": "drum/train/0"},
        {"file_name": "audio/a.wav", "caption": "a single kick drum sound", "split": "train",
         "template": "drum/train/2"},
        {"file_name": "audio/b.wav", "caption": "a snare drum hit", "split": "train", "template": "drum/train/0"},
        {"file_name": "audio/c.wav", "caption": "a short isolated tom-tom", "split": "test", "template": "drum/test/1"},
    ]


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


# ----------------------------------------------------------------------------------------------- caption sides
def test_read_caption_rows_names_file_and_line(tmp_path):
    good = _write_csv(tmp_path / "captions.csv", _rows())
    assert len(cr.read_caption_rows(good)) == 4
    bad = _rows()
    bad[2]["split"] = "valid"
    with pytest.raises(ValueError, match=r"captions_bad.csv' line 4: split must be train or test"):
        cr.read_caption_rows(_write_csv(tmp_path / "captions_bad.csv", bad))
    with pytest.raises(ValueError, match=r"columns \['split'\] missing"):
        cr.read_caption_rows(_write_csv(tmp_path / "nosplit.csv", [{"file_name": "a.wav", "caption": "x"}]))
    with pytest.raises(ValueError, match="not found"):
        cr.read_caption_rows(tmp_path / "absent.csv")


def test_check_sides_rejects_shared_files_and_templates():
    cr.check_sides(_rows())
    shared_file = _rows() + [{"file_name": "audio/a.wav", "caption": "x", "split": "test", "template": "drum/test/0"}]
    with pytest.raises(ValueError, match="file 'audio/a.wav' has captions on both sides"):
        cr.check_sides(shared_file)
    shared_template = _rows() + [{"file_name": "audio/d.wav", "caption": "x", "split": "test",
                                  "template": "drum/train/0"}]
    with pytest.raises(ValueError, match="template 'drum/train/0' is used on both sides"):
        cr.check_sides(shared_template)
    with pytest.raises(ValueError, match="needs train and test captions"):
        cr.check_sides([r for r in _rows() if r["split"] == "train"])


def test_training_table_is_one_row_per_train_file_and_reads_back_as_caption_table(tmp_path):
    from kikimimi.data.captions import CaptionTable

    table = cr.training_table_rows(_rows())
    assert table == [
        {"file_name": "audio/a.wav", "caption_1": "a kick drum hit", "caption_2": "a single kick drum sound"},
        {"file_name": "audio/b.wav", "caption_1": "a snare drum hit", "caption_2": ""},
    ]
    path = run_clap.write_train_captions(tmp_path, _rows())
    assert path == tmp_path / run_clap.TRAIN_CSV
    t = CaptionTable.from_csv(path)
    # keys relative to the data folder: the same keys a prep cache of this list gets (suffix aside)
    assert t.keys == ["audio/a.wav", "audio/b.wav"]
    assert t.captions("audio/a.wav") == ["a kick drum hit", "a single kick drum sound"]
    assert t.captions("audio/b.wav") == ["a snare drum hit"]
    mtime = path.stat().st_mtime_ns
    run_clap.write_train_captions(tmp_path, _rows())  # unchanged content: file untouched
    assert path.stat().st_mtime_ns == mtime


# ----------------------------------------------------------------------------------------------- prompts
def test_held_out_prompts_drop_training_captions_with_fallback():
    labels = {"kick": ["a kick drum hit", "the sound of a kick drum"], "snare": ["A snare drum hit."],
              "tom": ["the sound of a tom-tom"]}
    kept, excluded, fallback = cr.held_out_prompts(labels, ["a kick drum hit", "a  snare drum hit"])
    assert kept["kick"] == ["the sound of a kick drum"] and excluded["kick"] == ["a kick drum hit"]
    assert kept["snare"] == ["A snare drum hit."] and fallback == ["snare"]  # every prompt seen: kept, flagged
    assert kept["tom"] == ["the sound of a tom-tom"] and excluded["tom"] == []
    with pytest.raises(ValueError, match="'x' has no prompt"):
        cr.held_out_prompts({"x": []}, [])


def test_prompt_matrix_follows_class_order_and_checks_classes():
    prompts, owner = cr.prompt_matrix({"b": ["b1", "b2"], "a": ["a1"]}, ["a", "b"])
    assert prompts == ["a1", "b1", "b2"] and owner.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match=r"missing \['c'\], unknown \[\]"):
        cr.prompt_matrix({"a": ["a1"], "b": ["b1"]}, ["a", "b", "c"])


def test_zero_shot_prompt_ensemble_and_per_prompt_accuracy():
    # class 0 prompts point to +x (one of them weakly off-axis), class 1 to +y; scale must not matter
    prompt_emb = np.array([[10.0, 0.0], [1.0, 0.2], [0.0, 3.0], [0.1, 1.0]])
    owner = np.array([0, 0, 1, 1])
    audio = np.array([[1.0, 0.1], [0.2, 1.0], [5.0, 4.0]])
    scores, pred = cr.zero_shot_predict(audio, prompt_emb, owner, 2)
    assert scores.shape == (3, 2) and pred.tolist() == [0, 1, 0]
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)  # cosines
    acc = cr.per_prompt_accuracy(audio, prompt_emb, owner, np.array([0, 1, 1]), 2)
    assert len(acc) == 2 and acc[0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="every class needs"):
        cr.class_text_embeddings(prompt_emb, np.array([0, 0, 0, 0]), 2)


# ----------------------------------------------------------------------------------------------- chance levels
def test_chance_retrieval_matches_the_analytic_level():
    n_audio = 40
    owner = np.repeat(np.arange(n_audio), 2)  # 2 captions per clip
    ch = cr.chance_retrieval(owner, n_audio, seed=1, draws=20)
    assert ch["text_to_audio"]["R@1"] == pytest.approx(1 / n_audio, abs=0.012)
    assert ch["text_to_audio"]["R@10"] == pytest.approx(10 / n_audio, abs=0.04)
    assert ch["audio_to_text"]["R@1"] == pytest.approx(2 / len(owner), abs=0.012)
    assert ch == cr.chance_retrieval(owner, n_audio, seed=1, draws=20)  # seeded
    assert cr.chance_zero_shot(14) == pytest.approx(1 / 14)


# ----------------------------------------------------------------------------------------------- table
def test_results_table_dashes_missing_parts_and_averages_the_probe():
    ret = {d: {c: 0.5 for c in cr.RETRIEVAL_COLUMNS} for d in ("text_to_audio", "audio_to_text")}
    rows = [{"model": "clap", "zero_shot": {"t1": 0.25, "t2": 0.5}, "retrieval": ret, "probe": {"t1": 0.5, "t2": 1.0}},
            {"model": "m2d", "zero_shot": None, "retrieval": None, "probe": {"t1": 0.4, "t2": 0.6}},
            {"model": "half", "probe": {"t1": 0.4}}]
    header, cells = cr.results_table(rows, ["t1", "t2"])
    assert header[:3] == ["model", "ZS t1", "ZS t2"] and header[-1] == "probe avg" and len(header) == 12
    assert cells[0] == ["clap", "25.0", "50.0"] + ["50.0"] * 8 + ["75.0"]
    assert cells[1][1:11] == ["—"] * 10 and cells[1][-1] == "50.0"
    assert cells[2][-1] == "—"  # a probe score missing for one task: no average
    md = cr.markdown_table(header, cells).splitlines()
    assert len(md) == 5 and md[1].count("---") == 12


# ----------------------------------------------------------------------------------------------- recipes, stage times
def test_recipes_have_every_scale_and_the_no_clap_control_shares_the_recipe():
    recipes = json.loads((SUITE / "recipes.json").read_text())
    for scale in ("smoke", "small", "full"):
        recipe = run_clap.load_clap_recipe(SUITE / "recipes.json", scale)
        assert recipes[scale]  # the suite's own sections are still there
        common = recipe["m2d_common"]
        for run in run_clap.M2D_RUNS:
            s = run_clap.run_settings(recipe, run)
            assert {k: s[k] for k in common} == common, f"{scale}.{run} overrides the shared recipe"
        assert recipe["m2d_clap"]["text_encoder"] == "minilm"
        assert recipe["m2d2_stage1"]["text_encoder"] == "smollm2#eos"
        names = [recipe[r]["run_name"] for r in run_clap.ALL_RUNS]
        assert len(set(names)) == 4


def test_load_clap_recipe_names_the_problem(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"clap": {"smoke": {"m2d_common": {}, "m2d_clap": {"run_name": "a"}}}}))
    with pytest.raises(SystemExit, match="needs clap.smoke with sections"):
        run_clap.load_clap_recipe(bad, "smoke")
    ok = {"m2d_common": {}, "m2d_clap": {"run_name": "a"}, "m2d2_stage1": {"run_name": "b", "text_encoder": "x"},
          "m2d2_stage2": {"run_name": "c", "text_encoder": "y"}, "m2d": {"run_name": "d"}}
    bad.write_text(json.dumps({"clap": {"smoke": ok}}))
    with pytest.raises(SystemExit, match="clap.smoke.m2d_clap needs a 'text_encoder'"):
        run_clap.load_clap_recipe(bad, "smoke")


def test_stage_times_keep_the_time_of_the_run_that_did_the_work(tmp_path):
    times = run_clap.StageTimes(tmp_path / "t.json")
    with times.stage("train"):
        times.mark()
    first = times.times["train"]
    again = run_clap.StageTimes(tmp_path / "t.json")
    assert again.times == {"train": first}
    with again.stage("train"):
        pass  # reused outputs only
    assert again.times["train"] == first
    with again.stage("new"):
        pass  # never timed before: recorded even without work
    assert "new" in json.loads((tmp_path / "t.json").read_text())
