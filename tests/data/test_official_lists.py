"""NTT's data files read as they are (kikimimi.data.official_lists; fact-sheet-m2d2-2026.md §2–§3): rawcap_*.csv with
the ytid key rule, files_*.csv over *_lms trees (missing files named and skipped), capembs_*.npy caches (the pickled
dict without arbitrary unpickling, or [N, D] aligned with its caption file), and their use by training."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from kikimimi.data.caption_pairs import filter_captioned
from kikimimi.data.corpus import CropDataset, resolve_corpus
from kikimimi.data.official_lists import (
    OfficialDataError,
    caption_source_kind,
    match_official_keys,
    official_embedding_cache,
    official_key_candidates,
    read_caption_embeddings,
    read_file_list,
    read_rawcaps,
)
from kikimimi.training.captions import caption_key_matcher, load_caption_table
from kikimimi.training.settings import is_embedding_cache


def _lms_tree(data: Path) -> list[str]:
    """A tiny official data folder: AudioSet, VGGSound, WavCaps and Clotho log-mels [1, 80, T] (random values)."""
    names = [
        "audioset_lms/unbalanced_train_segments/--aE2O5G5WE_0.000.npy",
        "vggsound_lms/train/abcdefghijk_000030.npy",
        "wavcaps_lms/FreeSound_flac/180913.npy",
        "clotho_lms/development/Birds?singing.npy",
    ]
    rng = np.random.default_rng(0)
    for n in names:
        (data / n).parent.mkdir(parents=True, exist_ok=True)
        np.save(data / n, rng.normal(-5, 2, (1, 80, 70 + 10 * len(n) % 30)).astype(np.float32))
    return names


def test_key_rule_prefix_then_folder_tag_and_stem() -> None:
    assert official_key_candidates("a/audioset_lms/x/--aE2O5G5WE_0.000.npy") == ("--aE2O5G5WE", "--aE2O5G5WE_0.000")
    assert official_key_candidates("wavcaps_lms/FreeSound_flac/180913.npy") == ("180913", "FreeSound180913")
    assert official_key_candidates("clotho_lms/development/Birds?singing.npy")[-1] == "Birds_singing"
    files = ["vggsound_lms/t/abcdefghijk_000030.npy", "audioset_lms/u/abcdefghijk_1.000.npy", "x/none.npy"]
    # VGGSound's <ytid>_<start> key is found by the stem; an AudioSet ID wins by its 11-character prefix
    assert match_official_keys(files, ["abcdefghijk_000030"]) == ["abcdefghijk_000030", None, None]
    assert match_official_keys(files, ["abcdefghijk", "abcdefghijk_000030"])[:2] == ["abcdefghijk", "abcdefghijk"]


def test_rawcaps_over_several_files_and_a_folder(tmp_path) -> None:
    (tmp_path / "rawcap_auto_acd.csv").write_text("ytid,caption\n--aE2O5G5WE,The sound of Speech.\n")
    (tmp_path / "rawcap_clotho.csv").write_text(
        "ytid,caption_1,caption_2\nBirds:singing,Birds sing.,Chirping birds.\n--aE2O5G5WE,A man talks.,\n"
    )
    (tmp_path / "rawcap_odd.csv").write_text("ytid,text\nFreeSound180913,A door creaks.\n")  # other column names
    caps = read_rawcaps(tmp_path)
    assert caps == {
        "--aE2O5G5WE": ["The sound of Speech.", "A man talks."],  # a key in two files has both files' captions
        "Birds_singing": ["Birds sing.", "Chirping birds."],
        "FreeSound180913": ["A door creaks."],
    }
    assert read_rawcaps([tmp_path / "rawcap_auto_acd.csv"]) == {"--aE2O5G5WE": ["The sound of Speech."]}
    assert caption_source_kind(tmp_path) == "rawcap" and not is_embedding_cache(tmp_path)
    table = load_caption_table(str(tmp_path))
    assert table.captions("Birds_singing") == ["Birds sing.", "Chirping birds."]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "rawcap_x.csv").write_text("file,caption\na,b\n")
    with pytest.raises(OfficialDataError, match=r"rawcap_x\.csv.*no 'ytid' column"):
        read_rawcaps(tmp_path / "bad")


def test_file_list_maps_rows_and_skips_missing_files_by_name(tmp_path) -> None:
    names = _lms_tree(tmp_path)
    lst = tmp_path / "files_A_V_W_C.csv"
    lst.write_text("file_name\n" + "".join(f"{n}\n" for n in [*names, "audioset_lms/gone/Y_missing.npy"]))
    with pytest.warns(UserWarning, match=r"1 of 5 listed files are missing and skipped: .*Y_missing\.npy"):
        got = read_file_list(lst)
    assert [p.relative_to(tmp_path).as_posix() for p in got.files] == names and len(got.missing) == 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corpus = resolve_corpus([str(lst)])
    assert corpus.kind == "cache" and len(corpus) == 4
    crop = CropDataset(corpus, 64, frontend="m2d-16k")[(0, 0)]["lms"]  # [1, 80, T] files read as [80, T]
    assert tuple(crop.shape) == (80, 64)
    # short items are padded with 0 in the raw log domain, as NTT's dataset pads (fact sheet §4), not with ln(eps)
    long_crop = CropDataset(corpus, 400, frontend="m2d-16k")
    assert long_crop.pad_mode == "log_zero"
    frames = np.load(got.files[0]).shape[-1]
    assert bool((long_crop[(0, 0)]["lms"][:, frames:] == 0).all())
    (tmp_path / "files_none.csv").write_text("file_name\nnowhere/a.npy\n")
    with pytest.raises(OfficialDataError, match="files_none.csv': none of its 1 listed files exists"):
        read_file_list(tmp_path / "files_none.csv")

    # the ytid rule pairs the list's files with official caption keys (kikimimi's path rule would not)
    keys = ["--aE2O5G5WE", "abcdefghijk_000030", "FreeSound180913", "Birds_singing"]
    kept, matched = filter_captioned(corpus, keys, match=caption_key_matcher(str(tmp_path / "rawcap_a.csv")))
    assert matched == keys and len(kept) == 4
    with pytest.raises(ValueError, match="3 of 4 training files have no caption"):
        filter_captioned(corpus, keys)


def test_capembs_pickled_dict_plain_array_and_validation(tmp_path) -> None:
    rng = np.random.default_rng(1)
    cache = tmp_path / "cache" / "m2d_clap_vit_base-80x608p16x16p16kpN-_N_V_E_m_b_2"
    cache.mkdir(parents=True)
    np.save(cache / "capembs_auto_acd.npy", {"--aE2O5G5WE": rng.normal(size=8).astype(np.float16),
                                             "Birds:singing": rng.normal(size=(2, 8)).astype(np.float16)},
            allow_pickle=True)  # fmt: skip  # the official format: a pickled dict key -> float16 array
    got = read_caption_embeddings(cache / "capembs_auto_acd.npy")
    assert {k: v.shape for k, v in got.items()} == {"--aE2O5G5WE": (1, 8), "Birds_singing": (2, 8)}
    assert got["--aE2O5G5WE"].dtype == np.float16
    assert caption_source_kind(cache) == "capembs" and is_embedding_cache(cache / "capembs_auto_acd.npy")

    # a plain [N, D] array aligned with its rawcap file (found two folders up, as data/ and data/cache/<run>/)
    (tmp_path / "rawcap_clotho.csv").write_text("ytid,caption\nFreeSound180913,A door.\nx,y\n")
    np.save(cache / "capembs_clotho.npy", rng.normal(size=(2, 8)).astype(np.float32))
    emb = official_embedding_cache(cache)  # the folder: all *.npy, merged
    assert sorted(emb.keys()) == ["--aE2O5G5WE", "Birds_singing", "FreeSound180913", "x"] and emb.dim == 8
    np.save(cache / "capembs_clotho.npy", rng.normal(size=(3, 8)).astype(np.float32))
    with pytest.raises(OfficialDataError, match=r"capembs_clotho\.npy': 3 embeddings but its caption file .* 2 rows"):
        read_caption_embeddings(cache / "capembs_clotho.npy")
    np.save(cache / "capembs_clotho.npy", rng.normal(size=(2, 8, 1)).astype(np.float32))
    with pytest.raises(OfficialDataError, match=r"shape \(2, 8, 1\), expected \[N, D\]"):
        read_caption_embeddings(cache / "capembs_clotho.npy")
    with pytest.raises(OfficialDataError, match="is 8-d, expected 4096-d"):
        read_caption_embeddings(cache / "capembs_auto_acd.npy", dim=4096)


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())  # a global that is not a numpy array part


def test_capembs_hostile_pickle_is_refused(tmp_path) -> None:
    path = tmp_path / "capembs_evil.npy"
    arr = np.empty((), dtype=object)
    arr[()] = {"k": _Payload()}
    np.save(path, arr, allow_pickle=True)
    assert b"getcwd" in path.read_bytes()
    with pytest.raises(OfficialDataError, match=r"capembs_evil\.npy': refused .*posix\.getcwd|nt\.getcwd"):
        read_caption_embeddings(path)
    path.write_bytes(b"not a npy file")
    with pytest.raises(OfficialDataError, match="not a .npy file"):
        read_caption_embeddings(path)
    assert pickle  # the module the unpickler restricts
