"""`kikimimi serve`'s describe panel: ``GET /api/describe`` gives an indexed file's timeline and paragraph from the
evidence code of ``kikimimi describe``; only indexed, unchanged files, bounded by duration before decoding, cached;
the page asks for it from a button on each result."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP
from conftest import sine

pytest.importorskip("fastapi", reason='kikimimi serve needs pip install "kikimimi[serve]"')
from fastapi.testclient import TestClient  # noqa: E402

from kikimimi.apps.serve import STATIC_DIR  # noqa: E402
from kikimimi.apps.serve.app import ServeSettings, create_app  # noqa: E402
from kikimimi.inference.search import update_index  # noqa: E402

SR = 16000
LABELS = ["a 300 Hz tone", "a 2000 Hz tone", "a 440 Hz tone"]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("describe") / "library"
    root.mkdir()
    sf.write(root / "tone440.wav", sine(440, 0.5, SR), SR)
    # 0–2.4 s a 300 Hz tone, then 2000 Hz to 4.6 s
    sf.write(root / "long.wav", np.concatenate([sine(300, 2.4, SR), sine(2000, 2.2, SR)]), SR)
    sf.write(root / "changed.wav", sine(440, 0.5, SR), SR)
    index = root.parent / "index"
    update_index(FrequencyCLAP(), root, index, model_id="fake", window_s=2, hop_s=1)
    return root, index


def client_for(index, model, **settings) -> TestClient:
    s = ServeSettings(window_s=2, hop_s=1, describe_segment_s=1.0, **settings)
    return TestClient(create_app(model, index, labels=LABELS, settings=s), base_url="http://127.0.0.1")


def test_an_indexed_file_is_described_with_its_timeline_and_paragraph(library):
    root, index = library
    model = FrequencyCLAP()
    with client_for(index, model) as c:
        r = c.get("/api/describe", params={"key": "long.wav"})
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["key"] == "long.wav" and d["duration_s"] == pytest.approx(4.6) and d["segments"] == 5
        parts = d["parts"]
        assert parts[0]["start_s"] == 0.0 and parts[0]["sounds"][0] == "a 300 Hz tone"
        assert parts[-1]["end_s"] == pytest.approx(4.6) and parts[-1]["sounds"][0] == "a 2000 Hz tone"
        assert parts[0]["span"].startswith("0:00–")
        assert "'long.wav' lasts 0:04.6" in d["paragraph"] and str(root) not in r.text  # no server paths
        calls = len(model.embedded)
        assert c.get("/api/describe", params={"key": "long.wav"}).json() == d  # cached: the model is not asked
        assert len(model.embedded) == calls
        assert "/api/describe" in c.get("/openapi.json").json()["paths"]


def test_only_indexed_unchanged_files_of_bounded_length_are_described(library):
    root, index = library
    model = FrequencyCLAP()
    with client_for(index, model, max_describe_s=2.0) as c:
        for key in ("secret.txt", "../index/manifest.json", str(root / "long.wav"), "nope.wav", ""):
            r = c.get("/api/describe", params={"key": key})
            assert r.status_code == 404 and set(r.json()) == {"error"}, key
        r = c.get("/api/describe", params={"key": "long.wav"})
        assert r.status_code == 413 and "2 s" in r.json()["error"] and model.embedded == []  # refused undecoded
        assert c.get("/api/describe", params={"key": "tone440.wav"}).status_code == 200
        os.utime(root / "changed.wav", ns=(0, 0))  # another file than the one indexed
        r = c.get("/api/describe", params={"key": "changed.wav"})
        assert r.status_code == 409 and "re-index" in r.json()["error"]


def test_the_page_has_a_describe_panel_per_result():
    js = (STATIC_DIR / "app.js").read_text()
    assert "/api/describe?key=${encodeURIComponent(hit.key)}" in js
    assert "describePanel(hit, audio)" in js and 'aria-expanded' in js
    assert "grid-area: describe" in (STATIC_DIR / "style.css").read_text()


def test_serve_evidence_and_the_listener_share_one_packaged_vocabulary():
    import kikimimi.apps.serve as serve
    import kikimimi.inference.evidence as evidence
    import kikimimi.inference.listener as listener

    assert serve.default_labels is evidence.default_labels is listener.default_labels
    assert serve.DEFAULT_LABELS_FILE == evidence.DEFAULT_LABELS_FILE == listener.DEFAULT_LABELS_FILE
    assert evidence.DEFAULT_LABELS_FILE.parent.name == "inference" and len(evidence.default_labels()) >= 50


def test_the_serve_command_sets_the_describe_bound():
    import argparse

    from kikimimi.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert parser.parse_args(["lib"]).max_describe_s == ServeSettings().max_describe_s == 600.0
    assert parser.parse_args(["lib", "--max-describe-s", "30"]).max_describe_s == 30.0
