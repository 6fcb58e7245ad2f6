"""Caption tables (CSV / JSON / label templates) and the resumable caption-embedding cache."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch

from kikimimi.data.caption_cache import CaptionCacheError, CaptionEmbeddingCache
from kikimimi.data.captions import (
    CaptionError,
    CaptionTable,
    captions_from_labels,
    join_labels,
    label_caption,
)
from kikimimi.models.text import TextEncoder

DIM = 8


class HashEncoder(TextEncoder):
    """Deterministic fake text encoder: each text → a vector seeded by its SHA-1; records what it embedded.

    ``fail_after`` raises after that many ``encode`` calls (a simulated kill).
    """

    def __init__(self, name: str = "hash", fail_after: int | None = None) -> None:
        super().__init__(DIM, name)
        self.seen: list[str] = []
        self.calls = 0
        self.fail_after = fail_after

    def embed_batch(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            seed = int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)
            rows.append(torch.from_numpy(np.random.default_rng(seed).normal(size=DIM).astype(np.float32)))
        return torch.stack(rows)

    def encode(self, texts, batch_size: int = 32) -> torch.Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.seen.extend(texts)
        return super().encode(texts, batch_size)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ label captions


def test_label_caption_audioset_style():
    assert label_caption(["Dog"]) == "The sound of Dog."
    assert label_caption(["Dog", "Rain"]) == "The sound of Dog and Rain."
    assert label_caption(["Dog", "Rain", "Speech"]) == "The sound of Dog, Rain, and Speech."
    assert label_caption([" Dog ", ""], "{labels} can be heard") == "Dog can be heard"
    assert join_labels(["a", "b", "c", "d"]) == "a, b, c, and d"
    with pytest.raises(ValueError, match="no labels"):
        label_caption(["", " "])


def test_captions_from_labels_templates_splits_and_names(tmp_path):
    csv_path = write(tmp_path / "task" / "labels.csv",
                     'file_name,label,split\nsub/a.wav,dog,train\nb.wav,"noise_burst,dog,/m/09x0r",train\n'
                     "c.wav,rain,test\n")
    table = captions_from_labels(csv_path)
    assert table.keys == ["b.wav", "c.wav", "sub/a.wav"]
    assert table.captions("sub/a.wav") == ["The sound of dog."]
    assert table.captions("b.wav") == ["The sound of noise burst, dog, and /m/09x0r."]
    assert table.path("sub/a.wav") == (tmp_path / "task" / "sub" / "a.wav").resolve()

    two = captions_from_labels(csv_path, ["The sound of {labels}.", "{labels} can be heard"], splits=["train"],
                               label_names={"/m/09x0r": "Speech"})
    assert two.keys == ["b.wav", "sub/a.wav"] and two.n_captions == 4
    assert two.captions("b.wav")[1] == "noise burst, dog, and Speech can be heard"

    with pytest.raises(CaptionError, match="placeholder"):
        captions_from_labels(csv_path, ["The sound of {label}."])
    bad = write(tmp_path / "bad.csv", "file_name,label\na.wav,dog\nb.wav,\n")
    with pytest.raises(CaptionError, match=r"bad\.csv' line 3: empty label for 'b\.wav'"):
        captions_from_labels(bad)
    with pytest.raises(CaptionError, match="no split column"):
        captions_from_labels(bad, splits=["train"])


# ------------------------------------------------------------------ caption tables


def test_caption_csv_rows_and_numbered_columns(tmp_path):
    rows = write(tmp_path / "list" / "caps.csv",
                 "file_name,caption\nx/b.wav,a dog barks\na.wav,rain on a roof\nx/b.wav,a dog barking twice\n")
    table = CaptionTable.from_csv(rows)
    assert table.keys == ["a.wav", "x/b.wav"] and len(table) == 2
    assert table.captions("x/b.wav") == ["a dog barks", "a dog barking twice"]
    assert table.paths == [(tmp_path / "list" / "a.wav").resolve(), (tmp_path / "list" / "x" / "b.wav").resolve()]

    numbered = write(tmp_path / "caps5.csv",
                     "File_Name,caption_2,caption_1,caption_3\nq.wav,second,first,\nr.wav,,only one,\n")
    t5 = CaptionTable.from_csv(numbered)
    assert t5.captions("q.wav") == ["first", "second"] and t5.captions("r.wav") == ["only one"]
    assert t5.n_captions == 3

    outside = tmp_path / "elsewhere" / "z.wav"
    t_abs = CaptionTable.from_csv(write(tmp_path / "lists" / "abs.csv", f"file_name,caption\n{outside},hi\n"))
    assert t_abs.keys[0].startswith("_ext/") and t_abs.path(t_abs.keys[0]) == outside


def test_caption_csv_errors_name_file_and_row(tmp_path):
    no_caption = write(tmp_path / "c1.csv", "file_name,caption\na.wav,hello\nb.wav,\n")
    with pytest.raises(CaptionError, match=r"c1\.csv' line 3: no caption for 'b\.wav'"):
        CaptionTable.from_csv(no_caption)
    no_file = write(tmp_path / "c2.csv", "file_name,caption\n,hello\n")
    with pytest.raises(CaptionError, match=r"c2\.csv' line 2: empty file_name"):
        CaptionTable.from_csv(no_file)
    wrong_cols = write(tmp_path / "c3.csv", "name,text\na.wav,hello\n")
    with pytest.raises(CaptionError, match=r"c3\.csv'.*lack file_name and caption"):
        CaptionTable.from_csv(wrong_cols)
    with pytest.raises(CaptionError, match="not found"):
        CaptionTable.from_csv(tmp_path / "missing.csv")


def test_caption_json_formats_and_errors(tmp_path):
    items = [{"audio": "a.wav", "captions": ["one", "two"]}, {"file_name": "b.wav", "caption": "three"},
             {"file_name": "a.wav", "caption": "four"}]
    path = write(tmp_path / "caps.json", json.dumps(items))
    table = CaptionTable.load(path)
    assert table.keys == ["a.wav", "b.wav"]
    assert table.captions("a.wav") == ["one", "two", "four"] and table.captions("b.wav") == ["three"]
    wrapped = CaptionTable.from_json(write(tmp_path / "w.json", json.dumps({"data": items[:1]})))
    assert wrapped.keys == ["a.wav"]

    bad = write(tmp_path / "bad.json", json.dumps([items[0], {"file_name": "c.wav", "captions": []}]))
    with pytest.raises(CaptionError, match=r"bad\.json' item 1: no caption for 'c\.wav'"):
        CaptionTable.from_json(bad)
    no_name = write(tmp_path / "bad2.json", json.dumps([{"caption": "x"}]))
    with pytest.raises(CaptionError, match="item 0: missing 'file_name'"):
        CaptionTable.from_json(no_name)
    with pytest.raises(CaptionError, match="not valid JSON"):
        CaptionTable.from_json(write(tmp_path / "bad3.json", "[{"))


# ------------------------------------------------------------------ caption-embedding cache


def make_table(n: int = 5) -> CaptionTable:
    caps = {f"k{i}.wav": [f"caption {i} {j}" for j in range(1 + i % 3)] for i in range(n)}
    return CaptionTable(caps, {k: f"/data/{k}" for k in caps})


def test_cache_build_load_get(tmp_path):
    table = make_table()
    enc = HashEncoder()
    out = tmp_path / "emb.safetensors"
    built = CaptionEmbeddingCache.build(table, enc, out, batch_size=4, shard_keys=2)
    assert out.is_file() and not (tmp_path / "emb.safetensors.partial").exists()
    cache = CaptionEmbeddingCache.load(out)
    assert cache.keys() == table.keys == built.keys()
    assert cache.dim == DIM and cache.encoder_name == "hash" and len(cache) == 5
    for key in table.keys:
        emb = cache.get(key)
        assert emb.dtype == np.float16 and emb.shape == (len(table.captions(key)), DIM)
        ref = enc.embed_batch(table.captions(key)).numpy()
        np.testing.assert_allclose(emb.astype(np.float32), ref, atol=2e-3, rtol=2e-3)
    assert cache.meta["n_captions"] == table.n_captions and built.meta == cache.meta
    with pytest.raises(KeyError, match="nope.wav"):
        cache.get("nope.wav")
    again = HashEncoder()
    CaptionEmbeddingCache.build(table, again, out)  # complete cache for the same encoder and captions: no work
    assert again.calls == 0


def test_cache_build_resumes_after_interruption(tmp_path):
    table = make_table(5)
    out = tmp_path / "emb.safetensors"
    with pytest.raises(KeyboardInterrupt):
        CaptionEmbeddingCache.build(table, HashEncoder(fail_after=1), out, shard_keys=2)
    assert not out.exists()
    shards = sorted((tmp_path / "emb.safetensors.partial").glob("shard-*.safetensors"))
    assert len(shards) == 1  # the first two keys were finished before the "kill"

    resumed = HashEncoder()
    cache = CaptionEmbeddingCache.build(table, resumed, out, shard_keys=2)
    first_two = {c for k in table.keys[:2] for c in table.captions(k)}
    assert resumed.seen and not first_two & set(resumed.seen)
    assert sorted(resumed.seen) == sorted(c for k in table.keys[2:] for c in table.captions(k))
    fresh = CaptionEmbeddingCache.build(table, HashEncoder(), tmp_path / "fresh.safetensors")
    for key in table.keys:
        np.testing.assert_array_equal(cache.get(key), fresh.get(key))


def test_cache_does_not_reuse_another_encoders_shards(tmp_path):
    table = make_table(4)
    out = tmp_path / "emb.safetensors"
    with pytest.raises(KeyboardInterrupt):
        CaptionEmbeddingCache.build(table, HashEncoder("other", fail_after=1), out, shard_keys=2)
    enc = HashEncoder("hash")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = CaptionEmbeddingCache.build(table, enc, out, shard_keys=2)
    assert any("another text encoder" in str(w.message) for w in caught)
    assert len(enc.seen) == table.n_captions and cache.encoder_name == "hash"


def test_sample_uses_the_rng(tmp_path):
    caps = {"a.wav": ["one", "two", "three", "four"], "b.wav": ["only"]}
    table = CaptionTable(caps, {k: f"/x/{k}" for k in caps})
    cache = CaptionEmbeddingCache.build(table, HashEncoder(), tmp_path / "c.safetensors")
    rows = cache.get("a.wav")
    def index_of(vector: np.ndarray) -> int:
        return int(np.flatnonzero((rows == vector).all(axis=1))[0])

    def sequence(seed: int, n: int = 20) -> list[int]:
        rng = np.random.default_rng(seed)
        return [index_of(cache.sample("a.wav", rng)) for _ in range(n)]

    assert sequence(1) == sequence(1) and sequence(1) != sequence(2)
    assert set(sequence(123, 200)) == {0, 1, 2, 3}
    batch = cache.sample_many(["a.wav", "b.wav"], np.random.default_rng(0))
    assert batch.shape == (2, DIM) and batch.dtype == np.float16
    np.testing.assert_array_equal(batch[1], cache.get("b.wav")[0])


def test_cache_load_errors_name_the_file(tmp_path):
    garbage = write(tmp_path / "g.safetensors", "not a safetensors file")
    with pytest.raises(CaptionCacheError, match=r"g\.safetensors"):
        CaptionEmbeddingCache.load(garbage)
    from safetensors.numpy import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"a.wav": np.zeros((1, DIM), np.float16)}, str(plain))
    with pytest.raises(CaptionCacheError, match=r"plain\.safetensors.*no kikimimi caption-cache metadata"):
        CaptionEmbeddingCache.load(plain)
    with pytest.raises(CaptionCacheError, match="not found"):
        CaptionEmbeddingCache.load(tmp_path / "missing.safetensors")
    with pytest.raises(CaptionCacheError, match="float16"):
        CaptionEmbeddingCache({"a": np.zeros((1, DIM), np.float32)}, encoder_name="x", dim=DIM)
