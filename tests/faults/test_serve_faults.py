"""Fault suite: `kikimimi serve` fed the mixed folder of good and broken uploads, interleaved.

Every good clip gets an answer (similar sounds + tags); every broken one (empty, text renamed to .wav,
truncated, NaN samples, no samples, a header claiming 8 hours or 4 GB) gets a 4xx with a reason and the
decoder's error kind, never a 500, a stack trace or a server path; the server keeps answering afterwards.
"""

from __future__ import annotations

import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP

from kikimimi.inference.search import update_index

from .inputs import fault_folder, tone

pytest.importorskip("fastapi", reason='kikimimi serve needs pip install "kikimimi[serve]"')
from fastapi.testclient import TestClient  # noqa: E402

from kikimimi.apps.serve.app import ServeSettings, create_app  # noqa: E402


def test_mixed_good_and_bad_uploads(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for f in (220.0, 660.0):
        sf.write(lib / f"t{int(f)}.wav", tone(0.5, f), 16000)
    update_index(FrequencyCLAP(), lib, tmp_path / "index", model_id="fake")
    ff = fault_folder(tmp_path / "uploads")
    app = create_app(FrequencyCLAP(), tmp_path / "index", settings=ServeSettings(max_upload_s=60.0))
    answers = {}
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        for path in ff.all:  # good and bad interleaved (sorted by name)
            r = c.post("/api/example", files={"file": (path.name, path.read_bytes(), "audio/wav")},
                       data={"labels": "a 220 Hz tone\na 660 Hz tone", "top": "2"})
            answers[path] = r
        assert c.get("/api/status").json()["files"] == 2  # still serving
    for path in ff.good:
        r = answers[path]
        assert r.status_code == 200, (path.name, r.text)
        assert len(r.json()["results"]) == 2 and len(r.json()["tags"]) == 2
    kinds = {}
    for path, what in ff.bad.items():
        r = answers[path]
        assert 400 <= r.status_code < 500, (path.name, what, r.status_code, r.text)
        body = r.json()
        assert body["error"] and "Traceback" not in r.text and str(tmp_path) not in r.text, (path.name, body)
        kinds[path.name] = (r.status_code, body.get("kind"))
    assert kinds["empty.wav"] == (400, "empty")
    assert kinds["notes.wav"] == (422, "not_audio")
    assert kinds["truncated.wav"] == (422, "truncated")
    assert kinds["nan.wav"] == (422, "non_finite")
    assert kinds["claims-8-hours.wav"][0] in (413, 422)  # refused on its header, before any decoding
    print("serve faults:", kinds)
