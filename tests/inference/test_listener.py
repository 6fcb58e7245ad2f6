"""Issue 30's Python face: ``kikimimi.load_listener(clap=…, lm=…)`` with ``.evidence``, ``.ask`` and ``.describe``."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from clap_fakes import FrequencyCLAP, HashTextEncoder, patch_text_encoder, write_tiny_clap2025

import kikimimi
from kikimimi.inference.evidence import EvidenceSettings
from kikimimi.inference.listener import Listener, default_labels

SR = 16000


def tones(path, parts):
    waves = [np.zeros(int(s * SR), np.float32) if f is None
             else (0.5 * np.sin(2 * np.pi * f * np.arange(int(s * SR)) / SR)).astype(np.float32) for f, s in parts]
    sf.write(path, np.concatenate(waves), SR)
    return path


def test_a_listener_builds_evidence_once_and_answers_from_it(tmp_path):
    path = tones(tmp_path / "t.wav", [(440, 2), (None, 1), (2500, 2)])
    listener = Listener(FrequencyCLAP(), ["a 440 Hz tone", "a 2500 Hz tone"], EvidenceSettings(segment_s=1.0))
    ev = listener.evidence(path)
    assert listener.evidence(ev) is ev and len(ev.segments) == 5
    answer = listener.ask(ev, "When is the 2500 Hz tone?")
    assert [(c.start_s, c.end_s) for c in answer.citations] == [(3.0, 5.0)] and answer.answered_by == "rules"
    assert listener.ask(path, "is it silent at 2.5 s?").text.startswith("Yes")  # a path: evidence built on the fly
    assert listener.ask(ev, "how many times does the 440 Hz tone occur?", choices=["1", "2"]).choice == "1"
    assert [p.sounds for p in listener.describe(ev).parts] == [["a 440 Hz tone"], ["silence"], ["a 2500 Hz tone"]]


def test_load_listener_reads_a_clap_checkpoint_and_the_packaged_vocabulary(tmp_path, monkeypatch):
    patch_text_encoder(monkeypatch, HashTextEncoder(32))
    listener = kikimimi.load_listener(write_tiny_clap2025(tmp_path), settings=EvidenceSettings(segment_s=2.0))
    assert listener.labels == default_labels() and "speech" in listener.labels and listener.lm is None
    ev = listener.evidence(tones(tmp_path / "a.wav", [(440, 2), (3000, 2)]))
    assert [(s.start_s, s.end_s) for s in ev.segments] == [(0.0, 2.0), (2.0, 4.0)]
    assert ev.models["clap"].endswith("checkpoint-30.pth") and ev.models["text_encoder"] == "hash-32"
    assert listener.ask(ev, "When does the cymbal crash?").known is False
