"""The DCASE 2024 caption metrics (SPIDEr-FL, FENSE, FER through aac-metrics, only when it and its model files are
already here), the one-line naming of what is missing otherwise, and the vocabulary size reported always."""

from __future__ import annotations

import shutil
import sys
import textwrap

import pytest

pytest.importorskip("pycocoevalcap")

from caption_fakes import PRED, REFS  # noqa: E402

from kikimimi.evaluation import caption_metrics as cm  # noqa: E402
from kikimimi.evaluation.caption_metrics import (  # noqa: E402
    DCASE2024_METRICS,
    FER_CHECKPOINT,
    SBERT_MODEL,
    caption_scores,
    dcase2024_status,
    metrics_table,
    vocabulary_size,
)

#: the distinct words of PRED after the simple tokeniser (lower case, punctuation dropped)
PRED_WORDS = {"a", "dog", "barks", "loudly", "rain", "falls", "on", "roof", "car", "passes", "by", "birds", "sing"}


def _forget_aac_metrics() -> None:
    for name in [n for n in sys.modules if n == "aac_metrics" or n.startswith("aac_metrics.")]:
        del sys.modules[name]


@pytest.fixture
def fake_aac(tmp_path, monkeypatch):
    """A stand-in ``aac_metrics`` package (its cache path and ``functional.evaluate``), its cache, FENSE_DATA and
    an empty Hugging Face cache, all under ``tmp_path``; ``calls`` records what ``evaluate`` was given."""
    import huggingface_hub.constants as constants

    root = tmp_path / "site"
    pkg = root / "aac_metrics"
    (pkg / "utils").mkdir(parents=True)
    (pkg / "functional").mkdir()
    (pkg / "__init__.py").write_text("calls = []\nfail = False\n")
    (pkg / "utils" / "__init__.py").write_text("")
    (pkg / "utils" / "globals.py").write_text(f"def get_default_cache_path():\n    return {str(tmp_path / 'aac')!r}\n")
    (pkg / "functional" / "__init__.py").write_text("")
    (pkg / "functional" / "evaluate.py").write_text(textwrap.dedent("""
        import aac_metrics

        def evaluate(candidates, mult_references, preprocess=True, metrics="default", device=None, verbose=0):
            if aac_metrics.fail:
                raise RuntimeError("no CUDA here\\nsecond line")
            aac_metrics.calls.append((list(candidates), mult_references, preprocess, list(metrics), device))
            values = {"spider_fl": 0.25, "fense": 0.5, "fer": 0.125}
            return {m: values[m] for m in metrics}, {}
    """))
    _forget_aac_metrics()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("FENSE_DATA", str(tmp_path / "fense"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    import aac_metrics

    yield aac_metrics
    _forget_aac_metrics()


def _install_model_files(tmp_path) -> None:
    """The files dcase2024_status looks for, as aac-metrics and the Hub cache lay them out."""
    (tmp_path / "fense").mkdir(exist_ok=True)
    (tmp_path / "fense" / FER_CHECKPOINT).write_bytes(b"ckpt")
    spice = tmp_path / "aac" / "aac-metrics" / "spice"
    (spice / "lib").mkdir(parents=True)
    (spice / "spice-1.0.jar").write_bytes(b"jar")
    repo = tmp_path / "hf-cache" / f"models--{SBERT_MODEL.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "modules.json").write_text("[]")


def test_vocabulary_size_is_always_reported():
    s = caption_scores(PRED, REFS, tokenizer="simple", meteor=False, dcase2024=False)
    assert s.vocabulary == len(PRED_WORDS) == vocabulary_size({"x": [" ".join(sorted(PRED_WORDS)), "a dog"]})
    assert s.to_dict()["vocabulary"] == len(PRED_WORDS)
    header, _, row = metrics_table({"model": s}).splitlines()[:3]
    assert header.endswith("| vocabulary |") and row.endswith(f"| {len(PRED_WORDS)} |")
    assert all(s.unavailable[m] == "left out (dcase2024=False)" for m in DCASE2024_METRICS)


def test_without_the_package_the_dcase2024_metrics_are_named_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "aac_metrics", None)  # import aac_metrics raises ImportError
    status = dcase2024_status()
    assert set(status) == set(DCASE2024_METRICS)
    why = status["FER"]
    assert why.startswith("needs the package 'aac-metrics'") and 'pip install "kikimimi[aacmetrics]"' in why
    assert "\n" not in why and len(set(status.values())) == 1
    s = caption_scores(PRED, REFS, tokenizer="simple", meteor=False)
    assert not set(DCASE2024_METRICS) & set(s.scores) and s.unavailable["FENSE"] == why
    assert "CIDEr-D" in s.scores and s.vocabulary == len(PRED_WORDS)  # today's metrics stay the offline default
    assert f"SPIDEr-FL, FENSE, FER: not computed — {why}." in metrics_table({"model": s})


def test_missing_model_files_are_named_with_their_paths(fake_aac, tmp_path):
    status = dcase2024_status()
    detector = str(tmp_path / "fense" / FER_CHECKPOINT)
    jar, lib = (str(tmp_path / "aac" / "aac-metrics" / "spice" / n) for n in ("spice-1.0.jar", "lib"))
    assert detector in status["FER"] and jar not in status["FER"] and SBERT_MODEL not in status["FER"]
    assert detector in status["FENSE"] and SBERT_MODEL in status["FENSE"]
    assert jar in status["SPIDEr-FL"] and lib in status["SPIDEr-FL"] and detector in status["SPIDEr-FL"]
    assert all("\n" not in why and "does not download" in why for why in status.values())
    s = caption_scores(PRED, REFS, tokenizer="simple", meteor=False)
    assert s.unavailable["FER"] == status["FER"] and fake_aac.calls == []


def test_with_its_files_aac_metrics_computes_them(fake_aac, tmp_path, monkeypatch):
    _install_model_files(tmp_path)
    monkeypatch.setattr(cm, "java_available", lambda: True)
    assert dcase2024_status() == dict.fromkeys(DCASE2024_METRICS, "")
    s = caption_scores(PRED, REFS, tokenizer="simple", meteor=False, spice=False)
    assert s.scores["SPIDEr-FL"] == 0.25 and s.scores["FENSE"] == 0.5 and s.scores["FER"] == 0.125
    assert not set(DCASE2024_METRICS) & set(s.unavailable)
    (candidates, references, preprocess, metrics, device), = fake_aac.calls
    keys = sorted(PRED)
    assert candidates == [PRED[k] for k in keys] and references == [REFS[k] for k in keys]  # raw captions, in order
    assert metrics == ["spider_fl", "fense", "fer"] and device == "cpu"
    assert preprocess is False  # aac-metrics' Stanford tokenizer jar is not in its cache here
    table = metrics_table({"model": s})
    assert "| SPIDEr-FL | FENSE | FER | vocabulary |" in table.splitlines()[0]

    monkeypatch.setattr(cm, "java_available", lambda: False)  # SPIDEr-FL needs Java (SPICE); FER and FENSE do not
    s = caption_scores(PRED, REFS, tokenizer="simple", meteor=False, spice=False)
    assert "Java" in s.unavailable["SPIDEr-FL"] and "SPIDEr-FL" not in s.scores and s.scores["FER"] == 0.125
    assert fake_aac.calls[-1][3] == ["fense", "fer"]

    fake_aac.fail = True  # a failing scorer is reported in one line; the other metrics stand
    s = caption_scores(PRED, REFS, tokenizer="simple", meteor=False, spice=False)
    assert s.unavailable["FER"] == "aac-metrics failed (RuntimeError: no CUDA here)" and "CIDEr-D" in s.scores


def test_the_real_aac_metrics_agrees_with_ours_where_both_exist():
    _forget_aac_metrics()
    aac = pytest.importorskip("aac_metrics.functional", reason="aac-metrics is not installed (the aacmetrics extra)")
    keys = sorted(PRED)
    res = cm._simple_tokenize({k: [PRED[k]] for k in keys})
    gts = cm._simple_tokenize({k: REFS[k] for k in keys})
    candidates, references = [res[k][0] for k in keys], [gts[k] for k in keys]
    ours = caption_scores(PRED, REFS, tokenizer="simple", meteor=False, spice=False, dcase2024=False)
    corpus, _ = aac.cider_d(candidates, references)
    assert float(corpus["cider_d"]) == pytest.approx(ours.scores["CIDEr-D"], rel=1e-6)
    corpus, _ = aac.bleu_4(candidates, references)
    assert float(corpus["bleu_4"]) == pytest.approx(ours.scores["BLEU_4"], rel=1e-4)
    vocab, _ = aac.vocab(candidates, references)
    assert int(vocab["vocab.cands"]) == ours.vocabulary


@pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer needs Java")
def test_vocabulary_counts_ptb_tokens():
    s = caption_scores({"a": "A dog's bark, loud."}, {"a": ["a dog barks"]}, tokenizer="ptb", meteor=False,
                       dcase2024=False)
    assert s.tokenizer == "ptb" and s.vocabulary == 5  # a, dog, 's, bark, loud
