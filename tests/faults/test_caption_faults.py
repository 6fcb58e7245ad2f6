"""Fault suite: captioning a folder of good and broken files, and training on a caption list with broken clips."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from caption_fakes import write_tiny_encoder, write_tiny_llama  # noqa: E402

from kikimimi.cli import main  # noqa: E402
from kikimimi.inference.captioner import caption_files, load_captioner, save_captioner  # noqa: E402
from kikimimi.inference.encoder import load  # noqa: E402
from kikimimi.models.causal_lm import load_causal_lm  # noqa: E402
from kikimimi.models.prefix_mapper import MapperConfig, PrefixMapper  # noqa: E402
from kikimimi.training.captioner_run import clip_features  # noqa: E402

from .inputs import fault_folder, named_once  # noqa: E402


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A captioner folder with a random mapper and a random tiny LM (captions are words, not sense)."""
    root = tmp_path_factory.mktemp("caption-faults")
    enc = write_tiny_encoder(root / "enc")
    lm, tok = load_causal_lm(str(write_tiny_llama(root / "lm", ["a tone sound."])))
    mapper = PrefixMapper(MapperConfig(in_dim=320, lm_dim=64, prefix_len=2, width=32, depth=1, heads=2))
    return save_captioner(root / "captioner", mapper=mapper, lm=lm, tokenizer=tok, lm_trained=True,
                          lm_spec="test", audio_model=enc, audio_embedding_dim=320, window_s=1.0,
                          generation={"beam_size": 1, "max_new_tokens": 3}), enc


def test_caption_reports_every_bad_file_and_captions_the_rest(untrained, tmp_path, capsys, fault_report):
    model, _ = untrained
    ff = fault_folder(tmp_path / "in")
    results, errors = caption_files(load_captioner(model), [ff.root])
    assert sorted(r.file for r in results) == sorted(str(p) for p in ff.good)
    assert sorted(e["file"] for e in errors) == sorted(str(p) for p in ff.bad)
    assert main(["caption", str(model), str(ff.root), "--json"]) == 0
    out = capsys.readouterr()
    assert all(named_once(out.err, bad) for bad in ff.bad), out.err
    got = json.loads(out.out)
    assert len(got["results"]) == len(ff.good) and len(got["errors"]) == len(ff.bad)
    assert main(["caption", str(model), *map(str, sorted(ff.bad))]) == 1  # nothing captioned
    assert "no file could be captioned" in capsys.readouterr().err
    fault_report("caption", bad_named=len(ff.bad), good_captioned=len(ff.good))


def test_training_features_skip_and_report_broken_clips(untrained, tmp_path):
    _, enc = untrained
    ff = fault_folder(tmp_path / "in")
    paths = {p.name: p for p in ff.all}
    feats, errors = clip_features(load(enc), paths, batch_size=4)
    assert set(feats) == {p.name for p in ff.good}
    assert sorted(e["file"] for e in errors) == sorted(str(p) for p in ff.bad)
    assert all(f.ndim == 2 and f.shape[1] == 320 for f in feats.values())
