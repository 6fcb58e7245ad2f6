"""Honest reports: missing-label refusal before any embedding, skipped files named, clip-length rule, chance
and majority lines, confusion matrices summed over seeds and linked, row names, fine-tune rows, legends."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main
from kikimimi.evaluation.baselines import LogMelStats
from kikimimi.evaluation.cluster_plot import cluster_figure, plot_clusters
from kikimimi.evaluation.confusion_plot import summed_confusion
from kikimimi.evaluation.run import ModelSpec, model_label, run_evaluation
from kikimimi.evaluation.tasks import MAX_UNIT_S, Task, TaskError, unit_from_durations


def _rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def _write(csv_path: Path, rows: list[dict]) -> Path:
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return csv_path


def _counting_spec(calls: list[int]) -> ModelSpec:
    base = LogMelStats("m2d-16k")

    def make(task):
        def embed(waves, sr):
            calls.append(len(waves))
            return base(waves, sr)
        return embed

    return ModelSpec("counting", make, 16000, None, "counting-model")


def test_label_missing_from_train_is_refused_before_embedding(tmp_path, capsys):
    labels = make_dataset(tmp_path / "audio", n_per_class=4, duration_s=0.3, classes=("tone", "clicks", "chirp"))
    rows = [r for r in _rows(labels) if not (r["label"] == "chirp" and r["split"] == "train")]
    bad = _write(tmp_path / "audio" / "bad.csv", rows)
    # library: the embedding function is never called
    calls: list[int] = []
    with pytest.raises(TaskError, match=r"\['chirp'\].*not in its training data"):
        run_evaluation([_counting_spec(calls)], [Task.from_csv(bad)], tmp_path / "lib", seeds=(42,), plots=False)
    assert calls == []
    # CLI: a one-line error, exit status 2, no traceback, no report
    assert main(["eval", "logmel", "--task", str(bad), "-o", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "chirp" in err and "Traceback" not in err
    assert not (tmp_path / "cli" / "report.md").exists()


def test_skipped_files_named_on_console_and_in_report(tmp_path, capsys):
    labels = make_dataset(tmp_path / "audio", n_per_class=5, duration_s=0.4, classes=("tone", "clicks"))
    rows = _rows(labels)
    (tmp_path / "audio" / "broken.wav").write_bytes(b"not audio")
    rows += [{"file_name": "broken.wav", "label": "tone", "split": "train"},
             {"file_name": "missing.wav", "label": "clicks", "split": "test"}]
    task_csv = _write(tmp_path / "audio" / "task.csv", rows)
    out = tmp_path / "rep"
    assert main(["eval", "logmel", "--task", str(task_csv), "-o", str(out), "--seeds", "2", "--probe", "both"]) == 0
    console = capsys.readouterr().out
    assert "skipped 2 unreadable file(s)" in console and "broken.wav" in console and "missing.wav" in console
    md = (out / "report.md").read_text()
    assert f"{len(rows)} clips in the task ({len(rows) - 2} embedded, 2 skipped)" in md
    assert "`broken.wav`" in md and "`missing.wav`" in md
    report = json.loads((out / "report.json").read_text())
    assert {s["file"] for s in report["tasks"]["task"]["skipped"]} == {"broken.wav", "missing.wav"}
    # both probes, chance and majority lines, the settings behind each number
    assert "| log-mel stats | linear |" in md and "| log-mel stats | logistic |" in md
    assert "| *chance (uniform guess)* | – | 50.0 |" in md and "*majority class (of training)*" in md
    assert "log-mel stats, linear: Adam, lr from [" in md and "log-mel stats, logistic: scikit-learn" in md
    assert {r["probe"] for r in _rows(out / "scores.csv")} == {"linear", "logistic"}
    # confusion matrices: linked, and their cells are counts summed over both seeds
    for probe in ("linear", "logistic"):
        png = f"confusion-log-mel_stats-{probe}.png"
        assert f"(task/{png})" in md and (out / "task" / png).is_file()
    assert "summed over all seeds and folds" in md


def test_clip_length_from_all_durations(tmp_path):
    # the first 30 rows are short clips (the old rule read the first 100 rows' median): the 95th percentile of
    # every file's duration is the long clips' 1.5 s, which crops none and pads the 30 short ones
    root = tmp_path / "a"
    root.mkdir()
    rows = []
    for i in range(100):
        dur = 0.5 if i < 30 else 1.5
        sf.write(root / f"c{i}.wav", np.zeros(int(16000 * dur), np.float32), 16000)
        rows.append({"file_name": f"c{i}.wav", "label": "ab"[i % 2], "split": "train" if i % 5 else "test"})
    task = Task.from_csv(_write(root / "lengths.csv", rows))
    assert task.unit_s == 1.5 and "95th percentile of 100 file durations" in task.unit_rule
    assert task.length_summary(16000) == {"cropped": 0, "padded": 30, "exact": 70, "unknown": 0}
    assert Task.from_csv(root / "lengths.csv", unit_s=1.0).length_summary(16000)["cropped"] == 70
    assert unit_from_durations([1.0] * 90 + [2.0] * 10) == 2.0  # 95th percentile, not the median
    assert unit_from_durations([100.0] * 5) == MAX_UNIT_S
    assert unit_from_durations([0.123]) == 0.13  # rounded up to 10 ms


def test_row_names_and_finetune_rows_merged(tmp_path):
    run = tmp_path / "my_run" / "kikimimi"
    run.mkdir(parents=True)
    weights = tmp_path / "official" / "AudioNTT2020-BYOLA-64x96d512.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    assert model_label(str(weights)) == "AudioNTT2020-BYOLA-64x96d512"  # not the parent folder "official"
    assert model_label(str(run)) == "my_run"
    labels = make_dataset(tmp_path / "audio", n_per_class=4, duration_s=0.3, classes=("tone", "clicks"))
    task = Task.from_csv(labels, name="toy", metric="uar")
    test = task.split_items("test")
    ft = tmp_path / "ft"
    ft.mkdir()
    # 2 tone + 2 clicks in test? take the task's own test items; predict everything as 'tone'
    preds = [{"key": it.key, "fold": 0, "label": it.label, "prediction": "tone"} for it in test]
    (ft / "report.json").write_text(json.dumps({"model": "my_run", "task": "toy", "result": {
        "metric": "accuracy", "score": 0.5, "std": 0.0, "predictions": preds}}))
    out = tmp_path / "rep"
    assert main(["eval", "logmel", "--task", str(labels), "-o", str(out), "--seeds", "1", "--no-plots",
                 "--probe", "logistic", "--metric", "uar", "--finetune", str(ft)]) == 2  # task name differs
    csv_toy = labels.with_name("toy.csv")
    csv_toy.write_text(labels.read_text())
    assert main(["eval", "logmel", "--task", str(csv_toy), "-o", str(out), "--seeds", "1", "--no-plots",
                 "--probe", "logistic", "--metric", "uar", "--finetune", str(ft)]) == 0
    md = (out / "report.md").read_text()
    assert "toy (UAR)" in md
    assert "| my_run | fine-tune | 50.0*" in md  # always 'tone' → UAR 0.5, re-scored from the predictions
    assert "re-scored as UAR" in md


def test_confusion_counts_are_summed_over_seeds(tmp_path):
    labels = make_dataset(tmp_path / "audio", n_per_class=4, duration_s=0.3, classes=("tone", "clicks"))
    calls: list[int] = []
    outcome = run_evaluation([_counting_spec(calls)], [Task.from_csv(labels)], tmp_path / "r", seeds=(1, 2, 3),
                             plots=False, probes=("logistic",))
    result = outcome.results["labels"]["counting"]["logistic"]
    n_test = len(Task.from_csv(labels).split_items("test"))
    assert summed_confusion(result).sum() == 3 * n_test


def test_cluster_legend_lists_every_class(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"class_{i:02d}" for i in range(35)]
    labels = [c for c in classes for _ in range(3)]
    emb = rng.normal(size=(len(labels), 6))
    fig = cluster_figure({"a": (emb, labels)})
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == classes
    assert legend._ncols == 2  # 35 classes → 2 columns of ≤ 20
    styles = {(h.get_color(), h.get_marker()) for h in legend.legend_handles}
    assert len(styles) == 35  # no two classes share colour and marker
    # single panel, few classes: all of them in the legend (the old figure lost 0, 1 and 9)
    digits = [str(d) for d in range(10) for _ in range(3)]
    fig = cluster_figure({"one": (rng.normal(size=(30, 4)), digits)})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [str(d) for d in range(10)]
    assert plot_clusters({"one": (rng.normal(size=(30, 4)), digits)}, tmp_path / "m.png").is_file()


def _score(score: float, std: float = 0.0):
    from types import SimpleNamespace

    return SimpleNamespace(score=score, std=std)


def test_verdict_says_plainly_when_the_log_mel_baseline_wins(tmp_path):
    """Log-mel statistics 80.0 beat a trained model (77.3) that beats its random init (70.0): the verdict names
    the baseline's win, in the eval report's wording and in the first run's (text, report.md, report.html)."""
    from kikimimi.apps.first_run.pipeline import EncoderRun, verdicts
    from kikimimi.apps.first_run.report_html import write_report_html
    from kikimimi.evaluation.verdicts import find_verdicts, verdict_lines

    results = {"drums": {"log-mel stats": {"linear": _score(0.800, 0.004)},
                         "enc": {"linear": _score(0.773, 0.004)},
                         "enc (random init)": {"linear": _score(0.700, 0.01)}}}
    models = {"log-mel stats": {"fingerprint": "logmel-m2d-16k", "family": "baseline"},
              "enc": {"fingerprint": "abc", "family": "m2d"},
              "enc (random init)": {"fingerprint": "random:abc", "family": "m2d"}}
    (v,) = find_verdicts(results, models, ("linear",))
    assert v["beats"] and v["clear"] and v["beats_baseline"] is False and v["verdict"] == "baseline wins"
    assert v["baseline"] == "log-mel stats" and v["baseline_difference"] == pytest.approx(-0.027)
    assert "pre-training beats random init by 7.3 points, but **log-mel stats beat this model by 2.7 points**" \
        in v["text"]
    assert "## Did pre-training help?" in verdict_lines([v]) and verdict_lines([]) == []
    # a tie counts for the baseline too; a model above the baseline is said to beat it
    results["drums"]["enc"]["linear"] = _score(0.800)
    assert "**log-mel stats tie with this model**" in find_verdicts(results, models, ("linear",))[0]["text"]
    results["drums"]["enc"]["linear"] = _score(0.850)
    (up,) = find_verdicts(results, models, ("linear",))
    assert up["verdict"] == "helped" and "the model also beats log-mel stats by 5.0 points" in up["text"]

    # the first run: its own names, the run length, and the page marks the result ✘ with the win in bold
    run = EncoderRun("M2D", "M2D ViT-tiny, 200 steps", tmp_path / "m2d", 200, 32, 500, 60.0)
    first = {"drums": {run.name: {"linear": _score(0.773, 0.004)}, "M2D (random init)": {"linear": _score(0.70)},
                       "log-mel statistics": {"linear": _score(0.80, 0.004)}}}
    (fv,) = verdicts(first, [run], ("linear",))
    assert fv["verdict"] == "baseline wins" and fv["beats"]
    assert ("**log-mel statistics beat this model by 2.7 points**: the run was too short to learn more than "
            "hand-made statistics (run length: 6,400 crops seen") in fv["text"]
    page = write_report_html(tmp_path / "r.html", tmp_path, {"verdicts": [fv], "why": "short runs"}).read_text()
    assert "<b>log-mel statistics beat this model by 2.7 points</b>" in page and "✘" in page and "✔" not in page
    assert "beat or tied 1 of 1" in page and "short runs" in page


def test_eval_report_has_the_verdict_section(tmp_path):
    """A "trained" model that is log-mel statistics itself ties with the baseline: report.md and report.json
    say so; its random-init twin (a constant embedding) is found by its ``random:`` fingerprint."""
    labels = make_dataset(tmp_path / "audio", n_per_class=4, duration_s=0.3, classes=("tone", "clicks"))
    base = LogMelStats("m2d-16k")
    specs = [ModelSpec("log-mel stats", lambda task: base, 16000, None, "logmel-m2d-16k"),
             ModelSpec("enc", lambda task: base, 16000, None, "fp-enc", "m2d"),
             ModelSpec("enc (random init)", lambda task: (lambda waves, sr: np.ones((len(waves), 4), np.float32)),
                       16000, None, "random:fp-enc", "m2d")]
    outcome = run_evaluation(specs, [Task.from_csv(labels)], tmp_path / "r", seeds=(42,), plots=False,
                             probes=("logistic",))
    md = (tmp_path / "r" / "report.md").read_text()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (v,) = report["verdicts"]
    res = outcome.results["labels"]
    assert v["model"] == "enc" and v["random_init"] == res["enc (random init)"]["logistic"].score
    assert v["verdict"] == "baseline wins" and "**log-mel stats tie with this model**" in v["text"]
    assert "## Did pre-training help?" in md and f"- {v['text']}" in md
    # without a twin there is nothing to say, and the first run can leave the section out
    run_evaluation(specs[:2], [Task.from_csv(labels)], tmp_path / "r2", seeds=(42,), plots=False,
                   probes=("logistic",))
    assert "Did pre-training help?" not in (tmp_path / "r2" / "report.md").read_text()
    run_evaluation(specs, [Task.from_csv(labels)], tmp_path / "r3", seeds=(42,), plots=False, probes=("logistic",),
                   verdicts=False)
    assert "Did pre-training help?" not in (tmp_path / "r3" / "report.md").read_text()
