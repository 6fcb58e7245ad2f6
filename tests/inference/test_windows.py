"""`kikimimi.inference.windows.window_bounds`: the one windowing rule of tag, search/index and caption."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from kikimimi.inference.search import embed_segments
from kikimimi.inference.windows import seconds_to_samples, window_bounds

SR = 16000


def test_rounding_is_to_the_nearest_sample():
    assert int(0.29 * 48000) == 13919  # what the old int() rule of `tag` gave
    assert seconds_to_samples(0.29, 48000) == 13920
    assert seconds_to_samples(2.3, 44100) == 101430
    spans = window_bounds(3 * 48000, 48000, 0.29, 0.29)
    assert all(e - s == 13920 for s, e in spans) and spans[1][0] == 13920


def test_shorter_than_a_window_is_the_whole_clip():
    for tail in ("full", "merge"):
        assert window_bounds(5 * SR, SR, 10.0, tail=tail) == [(0, 5 * SR)]
        assert window_bounds(0, SR, 10.0, tail=tail) == [(0, 0)]
        assert window_bounds(10 * SR, SR, 10.0, tail=tail) == [(0, 10 * SR)]  # exactly one window
    assert window_bounds(23 * SR, SR, 0.0, 5.0) == [(0, 23 * SR)]  # window 0: whole files


def test_exact_multiples_need_no_extra_window():
    assert window_bounds(3 * SR, SR, 1.0, 1.0) == [(0, SR), (SR, 2 * SR), (2 * SR, 3 * SR)]
    assert window_bounds(3 * SR, SR, 1.0, tail="merge") == [(0, SR), (SR, 2 * SR), (2 * SR, 3 * SR)]
    assert window_bounds(20 * SR, SR, 10.0, 5.0) == [(0, 10 * SR), (5 * SR, 15 * SR), (10 * SR, 20 * SR)]


def test_a_final_partial_window():
    # full: the last window keeps the window's length and ends at the end of the clip
    assert window_bounds(23 * SR, SR, 10.0, 5.0) == [(0, 160000), (80000, 240000), (160000, 320000),
                                                     (208000, 368000)]
    assert window_bounds(int(3.5 * SR), SR, 1.0) == [(0, SR), (SR, 2 * SR), (2 * SR, 3 * SR), (40000, 56000)]
    # merge: more than a quarter window left is a shorter window; up to a quarter joins the one before
    assert window_bounds(int(3.5 * SR), SR, 1.0, tail="merge")[-1] == (3 * SR, 56000)
    assert window_bounds(int(3.25 * SR), SR, 1.0, tail="merge") == [(0, SR), (SR, 2 * SR), (2 * SR, 52000)]
    assert window_bounds(int(1.4 * SR), SR, 1.0, tail="merge") == [(0, 22400)]  # < 1.5 windows: one
    assert window_bounds(int(1.5 * SR), SR, 1.0, tail="merge") == [(0, SR), (SR, 24000)]


def _old_caption_rule(n_samples: int, sr: int, window_s: float) -> list[tuple[int, int]]:
    """`Captioner.caption_windows` before the one rule (seconds, then int of the products)."""
    total_s = n_samples / sr
    n = 1 if total_s < 1.5 * window_s else int(math.ceil(total_s / window_s - 0.25))
    bounds = [(i * window_s, min(total_s, (i + 1) * window_s) if i < n - 1 else total_s) for i in range(n)]
    return [(int(a * sr), int(b * sr)) for a, b in bounds]


def test_merge_is_the_captioners_old_rule_where_no_float_product_falls_short():
    for n in range(0, 6 * SR, 997):
        assert window_bounds(n, SR, 1.0, tail="merge") == _old_caption_rule(n, SR, 1.0), n
    # where it does, the old rule lost a sample at a window end (3 × 0.7 s × 16000 = 33599.999…)
    old, new = _old_caption_rule(int(3.37 * SR), SR, 0.7), window_bounds(int(3.37 * SR), SR, 0.7, tail="merge")
    assert old[2] == (22400, 33599) and new[2] == (22400, 33600)


def test_bad_settings():
    with pytest.raises(ValueError, match="non-overlapping"):
        window_bounds(10 * SR, SR, 2.0, 1.0, tail="merge")
    with pytest.raises(ValueError, match="'last'"):
        window_bounds(10 * SR, SR, 2.0, tail="last")


class _ZeroModel:
    sample_rate = SR

    def encode_audio(self, waves, sample_rate=None, batch_size=8):
        return np.zeros((len(waves), 2), np.float32)


@pytest.mark.parametrize("seconds", [3.0, 12.0, 23.0, 23.7])
def test_search_segments_follow_the_same_rule(tmp_path, seconds):
    path = tmp_path / "long.wav"
    n = int(seconds * SR)
    sf.write(path, np.zeros(n, np.float32), SR)
    _, segments, _ = embed_segments(_ZeroModel(), path, window_s=10.0, hop_s=5.0)
    assert segments == [[round(s / SR, 6), round(e / SR, 6)] for s, e in window_bounds(n, SR, 10.0, 5.0)]
