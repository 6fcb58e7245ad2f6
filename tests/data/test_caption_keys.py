"""Caption keys of training files that live outside the caption table's folder (a prep cache, a view of one)."""

from __future__ import annotations

from pathlib import Path

from kikimimi.data.caption_pairs import match_caption_keys
from kikimimi.data.corpus import Corpus


def _corpus(root: Path, names: list[str]) -> Corpus:
    files = [root / n for n in names]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
    return Corpus(files=files, kind="cache", sources=[str(root / "view")])


def test_a_cache_elsewhere_finds_captions_keyed_by_the_audio_path(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "prep", ["audio/pkg/a~1.npy", "audio/pkg/b~2.npy", "audio/other/c.npy"])
    keys = ["audio/pkg/a~1.wav", "audio/pkg/b~2.wav", "audio/x/c.wav", "audio/y/c.wav"]
    # a and b: one caption key each by stem; c: two keys share the stem, so none is guessed
    assert match_caption_keys(corpus, keys) == ["audio/pkg/a~1.wav", "audio/pkg/b~2.wav", None]


def test_exact_relative_keys_still_win_over_a_name(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, ["view/sub/a.npy"])
    assert match_caption_keys(corpus, ["zzz/a.wav", "sub/a.wav"]) == ["sub/a.wav"]
