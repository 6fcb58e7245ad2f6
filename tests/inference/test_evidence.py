"""Issue 30, evidence: :func:`kikimimi.inference.evidence.build_evidence` streams a file by the one windowing rule
and finds generated tones at the times they were put, with loudness, silence, file-level summaries and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP

from kikimimi.inference.evidence import (
    Evidence,
    EvidenceError,
    EvidenceSettings,
    build_evidence,
    level_dbfs,
    stream_windows,
)
from kikimimi.inference.windows import window_bounds

SR = 16000
LABELS = ["a 440 Hz tone", "a 1000 Hz tone", "a 2500 Hz tone", "a 6000 Hz tone"]


def tone(freq_hz: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def known_recording(path) -> None:
    """0–3 s 440 Hz, 3–5 s digital silence, 5–8 s 2500 Hz, 8–10 s 440 Hz, 10–12 s 6000 Hz (quiet)."""
    wave = np.concatenate([tone(440, 3), np.zeros(2 * SR, np.float32), tone(2500, 3), tone(440, 2),
                           tone(6000, 2, amplitude=0.05)])
    sf.write(path, wave, SR, subtype="FLOAT")


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "known.wav"
    known_recording(path)
    return path


def test_stream_windows_are_exactly_the_windows_of_the_one_rule(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "n.wav"
    for n in (1, 999, 1000, 1499, 1500, 2000, 2251, 3249, 3251, 5123):
        wave = rng.uniform(-0.5, 0.5, n).astype(np.float32)
        sf.write(path, wave, 1000, subtype="FLOAT")
        for window_s, hop_s, tail in ((1.0, None, "merge"), (1.0, 0.5, "full"), (1.0, 0.3, "full"),
                                      (0.7, 0.7, "full")):
            got = list(stream_windows(path, 1000, window_s, hop_s, tail=tail))
            assert [(a, b) for a, b, _w in got] == window_bounds(n, 1000, window_s, hop_s, tail=tail), (n, hop_s)
            assert all(np.array_equal(w, wave[a:b]) for a, b, w in got)


def test_stream_windows_hold_a_few_windows_not_the_file(tmp_path, monkeypatch):
    import kikimimi.inference.evidence as ev

    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(60 * 1000, np.float32), 1000, subtype="FLOAT")
    largest = [0]
    real = np.concatenate

    def watching(arrays, *args, **kwargs):
        out = real(arrays, *args, **kwargs)
        largest[0] = max(largest[0], out.size)
        return out

    monkeypatch.setattr(ev.np, "concatenate", watching)
    assert len(list(stream_windows(path, 1000, 1.0))) == 60
    assert largest[0] <= 4 * 1000  # a 60-window file, never more than ~3 windows and a block in the buffer


def test_levels_in_dbfs():
    assert level_dbfs(np.ones(100, np.float32)) == (0.0, 0.0)
    rms, peak = level_dbfs(tone(1000, 1.0, amplitude=1.0))
    assert rms == pytest.approx(-3.01, abs=0.02) and peak == pytest.approx(0.0, abs=0.01)
    assert level_dbfs(np.zeros(10, np.float32)) == (-120.0, -120.0)


def test_the_evidence_finds_the_tones_where_they_were_put(recording, tmp_path):
    clap = FrequencyCLAP()
    ev = build_evidence(recording, clap, LABELS, EvidenceSettings(segment_s=1.0, top_k=2, batch_size=4))
    assert ev.duration_s == 12.0 and len(ev.segments) == 12
    assert [(s.start_s, s.end_s) for s in ev.segments] == [(float(i), float(i + 1)) for i in range(12)]
    assert max(clap.embedded) <= 4  # batches of batch_size segments
    top = ["silence" if s.silent else s.tags[0].label for s in ev.segments]
    assert top == ["a 440 Hz tone"] * 3 + ["silence"] * 2 + ["a 2500 Hz tone"] * 3 + ["a 440 Hz tone"] * 2 \
        + ["a 6000 Hz tone"] * 2
    assert all(len(s.tags) == 2 for s in ev.segments)
    assert ev.segments[0].rms_dbfs == pytest.approx(-9.03, abs=0.05)  # 0.5 amplitude sine
    assert ev.segments[10].rms_dbfs == pytest.approx(-29.03, abs=0.05) and not ev.segments[10].silent
    assert ev.segments[3].rms_dbfs == -120.0 and ev.silent_s == 2.0

    a440 = ev.tag("a 440 Hz tone")
    assert (a440.top1, a440.first_s, a440.last_s, a440.top_spans) == (5, 0.0, 10.0, [[0.0, 3.0], [8.0, 10.0]])
    assert ev.tag("a 2500 Hz tone").top_spans == [[5.0, 8.0]]
    assert ev.tags[0].label == "a 440 Hz tone"  # most frequent first
    assert ev.segments_at(8.5)[0].index == 8 and ev.segments_at(12.0)[0].index == 11 and ev.segments_at(13) == []

    out = ev.save(tmp_path / "sub" / "known.evidence.json")
    data = json.loads(out.read_text())
    assert data["format"] == "kikimimi-evidence" and data["settings"]["segment_s"] == 1.0
    again = Evidence.load(out)
    assert again == ev
    assert not list(out.parent.glob(".*"))  # an atomic write leaves no temporary behind


def test_overlapping_segments_and_the_merge_tail(recording):
    ev = build_evidence(recording, FrequencyCLAP(), LABELS, EvidenceSettings(segment_s=2.0, hop_s=1.0, top_k=1))
    assert [(s.start_s, s.end_s) for s in ev.segments][-2:] == [(9.0, 11.0), (10.0, 12.0)]
    assert [s.start_s for s in ev.segments if s.silent] == [3.0] and ev.silent_s == 2.0  # 2–4 s and 4–6 s are not
    merged = build_evidence(recording, FrequencyCLAP(), LABELS, EvidenceSettings(segment_s=5.5, top_k=1))
    assert [(s.start_s, s.end_s) for s in merged.segments] == [(0.0, 5.5), (5.5, 12.0)]  # a 1-s rest joins


def test_a_captioner_captions_each_segment(recording):
    calls = []

    class FakeCaptioner:
        config = {"caption_question": "Describe this sound."}

        class encoder:  # noqa: N801 - an attribute standing for the audio encoder
            sample_rate = 8000

        def frames(self, waves, sample_rate):
            calls.append((len(waves[0]), sample_rate))
            return [np.zeros((3, 4), np.float32)]

        def answer_frames(self, frames, question):
            return f"caption {len(calls)} for {question}", -1.0

    ev = build_evidence(recording, FrequencyCLAP(), LABELS, EvidenceSettings(segment_s=4.0), captioner=FakeCaptioner())
    assert [s.caption for s in ev.segments] == [f"caption {i} for Describe this sound." for i in (1, 2, 3)]
    assert calls[0] == (4 * 8000, 8000)  # resampled to the captioner's rate


def test_bad_settings_and_files_are_named(tmp_path, recording):
    with pytest.raises(EvidenceError, match="positive"):
        EvidenceSettings(segment_s=0)
    with pytest.raises(EvidenceError, match="twice"):
        build_evidence(recording, FrequencyCLAP(), ["a", "a"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(EvidenceError, match="bad.json.*not kikimimi evidence"):
        Evidence.load(bad)


def test_a_label_never_on_top_is_still_found_by_its_scores(tmp_path):
    """Presence: a rank among the top labels and a threshold relative to the label's best score in the file; the
    scores are saved with the evidence, and evidence without them falls back to the top tags."""
    from kikimimi.inference.evidence import PRESENCE_MARGIN, Segment, TagScore, summarise_tags

    labels = [f"label {i}" for i in range(10)]
    # "label 1" is never the top tag (label 0 always is) but scores high in segments 1, 2 and 5; low elsewhere
    rows = [[0.5, 0.1], [0.5, 0.4], [0.5, 0.42], [0.5, 0.1], [0.5, 0.12], [0.5, 0.38]]
    segs = []
    for i, (a, b) in enumerate(rows):
        scores = [a, b] + [0.0] * 8
        segs.append(Segment(i, 3.0 * i, 3.0 * i + 3, -20.0, -6.0, False, [TagScore("label 0", 0.9, a)], None, scores))
    ev = Evidence("f.wav", 18.0, 16000, labels, {"segment_s": 3.0}, {}, segs, summarise_tags(segs), 0.0, -20.0)
    p = ev.presence("label 1")
    assert p.by_score and p.threshold == pytest.approx(0.42 - PRESENCE_MARGIN)
    assert p.segments == [1, 2, 5] and p.spans == [[3.0, 9.0], [15.0, 18.0]] and p.count == 2 and p.first_s == 3.0
    assert ev.tag("label 1") is None  # the top tags alone never see it
    assert ev.presence("label 9").segments == []  # ties at the segment's median: not heard
    assert ev.presence("not a label") is None
    again = Evidence.load(ev.save(tmp_path / "e.json"))
    assert again.presence("label 1") == p
    data = json.loads((tmp_path / "e.json").read_text())
    for s in data["segments"]:
        s.pop("scores")
    old = Evidence.from_dict(data)  # a version-1 file: no scores
    assert not old.presence("label 0").by_score and old.presence("label 0").segments == list(range(6))
    data["segments"][0]["scores"] = [0.1]
    with pytest.raises(EvidenceError, match="do not match the 10 labels"):
        Evidence.from_dict(data, "e.json")


def test_a_short_hit_in_a_quiet_segment_is_not_silence(tmp_path):
    # 1 s segments: a one-sample click at -26 dBFS peak has an RMS of -68 dBFS over its segment's second, but it is a
    # sound; a segment of noise at -80 dBFS is silent
    wave = np.concatenate([np.zeros(SR, np.float32), np.full(SR, 1e-4, np.float32)])
    wave[SR // 2] = 0.05
    path = tmp_path / "click.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    ev = build_evidence(path, FrequencyCLAP(), LABELS, EvidenceSettings(segment_s=1.0))
    assert ev.segments[0].rms_dbfs < -60 and ev.segments[0].peak_dbfs > -40
    assert [s.silent for s in ev.segments] == [False, True]
    assert all(s.scores is not None and len(s.scores) == len(LABELS) for s in ev.segments)
    lean = build_evidence(path, FrequencyCLAP(), LABELS, EvidenceSettings(segment_s=1.0, keep_scores=False))
    assert all(s.scores is None for s in lean.segments)
