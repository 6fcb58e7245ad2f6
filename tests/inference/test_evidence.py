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
