"""The class-word rule of the open captioner's evaluation (benchmarks/open_suite/eval_open_captioner.py): a caption
names a class in the open corpus's own words, the longest word wins, and no word is a miss."""

from __future__ import annotations

import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "open_suite"
sys.path.insert(0, str(SUITE))

import eval_open_captioner as ev  # noqa: E402


def test_captions_name_classes_in_the_corpus_words():
    assert ev.named("language_id", "an automated telephone prompt in Italian") == "italian"
    assert ev.named("drum_type", "a single pearl tom sample") == "tom"
    assert ev.named("drum_type", "a single bass drum sample") == "kick"  # not a bass guitar: drums only here
    assert ev.named("drum_type", "a closed hi-hat hit from the Black Pearl drum kit") == "hihat"
    assert ev.named("instrument_family", "a soft string ensemble note") == "ensemble"  # longest match wins
    assert ev.named("instrument_family", "a loud strings note") == "strings"
    assert ev.named("instrument_family", "a medium chromatic percussion note") == "chromatic_percussion"
    assert ev.named("instrument_family", "a short sound from freedroidrpg") is None


def test_class_word_accuracy_counts_per_task_with_chance():
    labels = {"a.wav": ("language_id", "french"), "b.wav": ("language_id", "english"),
              "c.wav": ("drum_type", "snare")}
    texts = {"a.wav": "a man speaks French", "b.wav": "a woman speaks French", "c.wav": "a snare rimshot"}
    acc = ev.class_word_accuracy(texts, labels)
    assert acc["language_id"] == {"n": 2, "chance": 0.2, "accuracy": 0.5}
    assert acc["drum_type"]["accuracy"] == 1.0 and "instrument_family" not in acc
