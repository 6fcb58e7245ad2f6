"""Retrieval metrics on hand-made similarity matrices (1, 3, 5 and mixed captions per clip), caption
adapters on fake AudioCaps/Clotho trees, and `kikimimi retrieval` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from clap_fakes import write_tiny_clap2025

from kikimimi.cli import main as cli_main
from kikimimi.data.captions import CaptionError
from kikimimi.evaluation.caption_adapters import (
    adapt_audiocaps,
    adapt_clotho,
    group_captions,
    read_captions_csv,
    write_captions_csv,
)
from kikimimi.evaluation.retrieval import rank_of, retrieval_metrics


def test_one_caption_per_clip():
    sim = np.array([[0.9, 0.1, 0.3],
                    [0.2, 0.5, 0.8],
                    [0.4, 0.6, 0.7]])
    m = retrieval_metrics(sim, [0, 1, 2])
    t2a, a2t = m["text_to_audio"], m["audio_to_text"]
    # columns: caption0 → audio0 first; caption1: 0.6 (audio2) beats 0.5; caption2: 0.8 (audio1) beats 0.7
    assert t2a["ranks"] == [1, 2, 2]
    assert t2a["R@1"] == pytest.approx(1 / 3)
    assert t2a["R@5"] == 1.0
    assert t2a["mAP@10"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert t2a["median_rank"] == 2 and t2a["mean_rank"] == pytest.approx(5 / 3)
    # rows: audio0 → caption0 first; audio1: caption2 (0.8) beats caption1; audio2 → caption2 first
    assert a2t["ranks"] == [1, 2, 1]
    assert a2t["R@1"] == pytest.approx(2 / 3)
    assert a2t["mAP@10"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert a2t["median_rank"] == 1 and a2t["mean_rank"] == pytest.approx(4 / 3)
    assert m["captions_per_audio"] == {1: 3}


def test_three_captions_per_clip():
    sim = np.array([[0.9, 0.2, 0.5, 0.8, 0.1, 0.3],
                    [0.7, 0.6, 0.65, 0.4, 0.3, 0.2]])
    m = retrieval_metrics(sim, [0, 0, 0, 1, 1, 1])
    a2t, t2a = m["audio_to_text"], m["text_to_audio"]
    # audio0 ranks its captions c0, c2, c1 at 1, 3, 5; audio1 ranks c3, c4, c5 at 4, 5, 6
    assert a2t["ranks"] == [1, 4]
    assert a2t["R@1"] == 0.5 and a2t["R@5"] == 1.0
    ap0 = (1 / 1 + 2 / 3 + 3 / 5) / 3
    ap1 = (1 / 4 + 2 / 5 + 3 / 6) / 3
    assert a2t["mAP@10"] == pytest.approx((ap0 + ap1) / 2)
    assert t2a["ranks"] == [1, 2, 2, 2, 1, 2]
    assert t2a["R@1"] == pytest.approx(2 / 6)
    assert t2a["mAP@10"] == pytest.approx((1 + 0.5 + 0.5 + 0.5 + 1 + 0.5) / 6)
    assert m["captions_per_audio"] == {3: 2}


def _row_with_ranks(n: int, wanted: dict[int, int]) -> np.ndarray:
    """A row of ``n`` scores where caption ``c`` lands at 1-based rank ``wanted[c]``; the others fill in order."""
    free = iter(sorted(set(range(1, n + 1)) - set(wanted.values())))
    ranks = [wanted[c] if c in wanted else next(free) for c in range(n)]
    return 1.0 - np.array(ranks) / 100.0


def test_five_captions_per_clip_and_the_top10_cut():
    owner = np.repeat([0, 1, 2], 5)
    sim = np.stack([
        _row_with_ranks(15, {0: 2, 1: 6, 2: 11, 3: 12, 4: 15}),
        _row_with_ranks(15, {5: 1, 6: 2, 7: 3, 8: 4, 9: 5}),
        _row_with_ranks(15, {10: 3, 11: 8, 12: 10, 13: 13, 14: 14}),
    ])
    m = retrieval_metrics(sim, owner)
    a2t = m["audio_to_text"]
    assert a2t["ranks"] == [2, 1, 3]
    assert a2t["R@1"] == pytest.approx(1 / 3)
    assert a2t["R@5"] == 1.0
    expected_ap = [(1 / 2 + 2 / 6) / 5, 1.0, (1 / 3 + 2 / 8 + 3 / 10) / 5]  # ranks 11+ do not count
    assert a2t["mAP@10"] == pytest.approx(np.mean(expected_ap))
    # text→audio by a plain reference loop over each column
    ref = []
    for j in range(15):
        order = sorted(range(3), key=lambda a: -sim[a, j])
        ref.append(order.index(owner[j]) + 1)
    assert m["text_to_audio"]["ranks"] == ref
    assert m["text_to_audio"]["R@1"] == pytest.approx(np.mean(np.array(ref) == 1))


def test_mixed_caption_counts_divide_by_each_clips_own_count_and_captionless_clips_are_distractors():
    # audio0: 1 caption (c0), audio1: 2 captions (c1, c2), audio2: none (a distractor)
    sim = np.array([[0.9, 0.1, 0.2],
                    [0.3, 0.8, 0.1],
                    [0.5, 0.95, 0.9]])
    m = retrieval_metrics(sim, [0, 1, 1])
    a2t, t2a = m["audio_to_text"], m["text_to_audio"]
    assert a2t["n_queries"] == 2  # audio2 has nothing to find
    # audio1's row [0.3, 0.8, 0.1]: c1 rank 1, c2 rank 3 → AP = (1/1 + 2/3) / 2
    assert a2t["mAP@10"] == pytest.approx((1.0 + (1 + 2 / 3) / 2) / 2)
    # column c1 [0.1, 0.8, 0.95]: the captionless audio2 beats audio1 → 2; c2 [0.2, 0.1, 0.9]: audio1 is 3rd
    assert t2a["ranks"] == [1, 2, 3]
    assert m["captions_per_audio"] == {0: 1, 1: 1, 2: 1}


def test_ties_are_broken_by_index_and_bad_input_is_rejected():
    assert rank_of(np.array([0.5, 0.5, 0.5]), 0) == 1
    assert rank_of(np.array([0.5, 0.5, 0.5]), 2) == 3
    with pytest.raises(ValueError, match="caption_audio has 2 entries"):
        retrieval_metrics(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="must be in"):
        retrieval_metrics(np.zeros((2, 2)), [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 0.0]]), [0, 0])


# ------------------------------------------------------------------------------------ caption adapters
def _touch_wav(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")  # adapters only look at names
    return path


def test_audiocaps_adapter_finds_plain_and_y_prefixed_files_and_reports_missing(tmp_path):
    meta = tmp_path / "audiocaps_dataset"
    meta.mkdir()
    with open(meta / "test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        w.writerows([[1, "abc", 30, "a dog barks"], [2, "abc", 30, "barking dog"], [3, "xyz", 0, "rain falls"],
                     [4, "gone", 10, "removed from youtube"]])
    _touch_wav(tmp_path / "test" / "abc.wav")
    _touch_wav(tmp_path / "test" / "Yxyz.wav")
    caps = adapt_audiocaps(tmp_path, split="test")
    assert [(p.name, c) for p, c in caps.rows] == [("abc.wav", "a dog barks"), ("abc.wav", "barking dog"),
                                                  ("Yxyz.wav", "rain falls")]
    assert caps.missing == ["gone"]
    out = write_captions_csv(caps, tmp_path / "caps.csv")
    back = read_captions_csv(out)
    files, captions, owner = group_captions(back.rows)
    assert [f.name for f in files] == ["abc.wav", "Yxyz.wav"] and owner == [0, 0, 1]
    assert "test/abc.wav" in out.read_text()  # written relative to the CSV folder
    with pytest.raises(CaptionError, match="val.csv"):
        adapt_audiocaps(tmp_path, split="val")


def test_clotho_adapter_expands_five_caption_columns(tmp_path):
    with open(tmp_path / "clotho_captions_evaluation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        w.writerow(["birds.wav"] + [f"birds {i}" for i in range(1, 6)])
        w.writerow(["missing.wav"] + [f"m {i}" for i in range(1, 6)])
    _touch_wav(tmp_path / "evaluation" / "birds.wav")
    caps = adapt_clotho(tmp_path)
    assert [c for _, c in caps.rows] == [f"birds {i}" for i in range(1, 6)]
    assert caps.missing == ["missing.wav"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file_name,caption\na.wav,\n")
    with pytest.raises(CaptionError, match="line 2"):
        read_captions_csv(bad)


# ------------------------------------------------------------------------------------ CLI end to end
def test_retrieval_command_reports_both_directions(tmp_path, capsys, monkeypatch):
    from clap_fakes import HashTextEncoder, patch_text_encoder

    from kikimimi.audio.synthetic import make_sound

    ckpt = write_tiny_clap2025(tmp_path / "models")
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    rng = np.random.default_rng(0)
    import soundfile as sf

    rows = []
    for i, kind in enumerate(("tone", "noise_burst", "clicks")):
        path = tmp_path / "audio" / f"{kind}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, make_sound(kind, 0.6 + 0.2 * i, 16000, rng), 16000)
        rows += [(path, f"a {kind} sound"), (path, f"{kind} heard")]
    (tmp_path / "audio" / "broken.wav").write_bytes(b"not audio")
    rows.append((tmp_path / "audio" / "broken.wav", "broken"))
    csv_path = write_captions_csv(rows, tmp_path / "caps.csv")
    out_json = tmp_path / "metrics.json"
    assert cli_main(["retrieval", str(ckpt), str(csv_path), "-o", str(out_json)]) == 0
    captured = capsys.readouterr()
    assert "audio→text" in captured.out and "text→audio" in captured.out
    assert "broken.wav" in captured.err
    m = json.loads(out_json.read_text())
    assert m["n_audio"] == 3 and m["n_captions"] == 6
    assert m["captions_per_audio"] == {"2": 3}
    assert 0.0 <= m["text_to_audio"]["R@1"] <= 1.0 and m["audio_to_text"]["R@10"] == 1.0
