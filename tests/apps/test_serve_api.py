"""`kikimimi serve` API: every endpoint, with good and bad input (fastapi.testclient, a fake CLAP model whose
rankings are known), the safety rules (host, token, body and duration bounds, pool limit, no stack traces),
and the command itself on a folder with a real (tiny) checkpoint and the MiniLM text encoder."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP
from conftest import sine

pytest.importorskip("fastapi", reason='kikimimi serve needs pip install "kikimimi[serve]"')
from fastapi.testclient import TestClient  # noqa: E402

from kikimimi.apps.serve import default_labels  # noqa: E402
from kikimimi.apps.serve.app import ServeSettings, create_app  # noqa: E402
from kikimimi.apps.serve.security import BindRefused, check_bind  # noqa: E402
from kikimimi.inference.search import update_index  # noqa: E402

SR = 16000
BASE = "http://127.0.0.1"


def wav_bytes(freq: float, seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, sine(freq, seconds, SR), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A library (5 short tones + one 4.6-s file) indexed with 2-s windows by the fake model."""
    root = tmp_path_factory.mktemp("serve") / "library"
    (root / "sub").mkdir(parents=True)
    for f in (220, 440, 880):
        sf.write(root / f"tone{f}.wav", sine(f, 0.5, SR), SR)
    for f in (1760, 3520):
        sf.write(root / "sub" / f"tone{f}.wav", sine(f, 0.5, SR), SR)
    sf.write(root / "long.wav", np.concatenate([sine(300, 2.4, SR), sine(2000, 2.2, SR)]), SR)
    (root / "secret.txt").write_text("not for the web")
    index = root.parent / "index"
    update_index(FrequencyCLAP(), root, index, model_id="fake", window_s=2, hop_s=1)
    return root, index


def make_client(index, model=None, **settings) -> TestClient:
    app = create_app(model or FrequencyCLAP(), index, settings=ServeSettings(window_s=2, hop_s=1, **settings))
    return TestClient(app, base_url=BASE)


@pytest.fixture(scope="module")
def client(served):
    with make_client(served[1]) as c:
        yield c


def test_status_labels_page_and_openapi(client):
    s = client.get("/api/status").json()
    assert (s["files"], s["segments"]) == (6, 5 + 4)
    assert s["vectors"]["kind"] == "flat" and s["vectors"]["exact"] is True
    assert s["segmenting"] == {"window_s": 2.0, "hop_s": 1.0} and s["captions"] is False
    assert "token" not in s["limits"]
    assert client.get("/api/labels").json()["labels"] == default_labels() and len(default_labels()) >= 50
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text and 'for="query"' in page.text
    assert "content-security-policy" in page.headers
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and "http://" not in r.text and "https://" not in r.text  # offline page
    assert "https://" not in page.text and "http://" not in page.text
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/api/search", "/api/similar", "/api/tags", "/api/example", "/api/caption", "/api/status",
            "/api/rescan", "/api/audio", "/api/spectrogram", "/api/labels"} <= paths
    assert client.get("/docs").status_code == 200


def test_text_search_ranks_segments_and_says_where(client):
    r = client.get("/api/search", params={"q": "a 440 Hz tone", "top": 4})
    assert r.status_code == 200
    res = r.json()["results"]
    assert [h["rank"] for h in res] == [1, 2, 3, 4] and res[0]["key"] == "tone440.wav"
    assert [h["score"] for h in res] == sorted((h["score"] for h in res), reverse=True)
    assert res[0]["start_s"] == 0.0 and res[0]["end_s"] == pytest.approx(0.5)
    hit = client.get("/api/search", params={"q": "2000 Hz", "top": 1}).json()["results"][0]
    # the window where the 2000 Hz part dominates (from 2.4 s), not the 300 Hz ones that start at 0 and 1 s
    assert hit["key"] == "long.wav" and hit["start_s"] >= 2.0
    assert hit["audio_url"] == "/api/audio?key=long.wav" and "start_s=" in hit["spectrogram_url"]
    sub = client.get("/api/search", params={"q": "3520", "top": 1}).json()["results"][0]
    assert sub["key"] == "sub/tone3520.wav" and sub["name"] == "tone3520.wav"


def test_search_is_per_file_by_default_and_flat_with_segments(client):
    """One long file with many similar windows is one result saying how many matched (issue 33.2)."""
    r = client.get("/api/search", params={"q": "300 Hz", "top": 3})
    body = r.json()
    keys = [h["key"] for h in body["results"]]
    assert r.status_code == 200 and body["grouped"] is True and len(set(keys)) == len(keys) == 3
    long = next(h for h in body["results"] if h["key"] == "long.wav")
    assert long["segments"] == 4 and 1 <= long["matched"] <= 4 and long["start_s"] in (0.0, 1.0, 2.0, 3.0)
    flat = client.get("/api/search", params={"q": "300 Hz", "top": 3, "segments": "true"}).json()
    assert flat["grouped"] is False and [h["key"] for h in flat["results"]].count("long.wav") >= 2
    assert "matched" not in flat["results"][0]
    for blank in ("", "   ", "\t"):
        r = client.get("/api/search", params={"q": blank})
        assert r.status_code == 400 and "empty" in r.json()["error"]


def test_docs_page_works_offline(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "/api/search" in r.text and "segments" in r.text
    assert "http://" not in r.text and "https://" not in r.text and "<script" not in r.text  # nothing from a CDN
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("params, status", [
    ({"q": ""}, 400), ({"q": "   "}, 400), ({"q": "x" * 301}, 400), ({"q": "440", "top": 0}, 400),
    ({"q": "440", "top": 101}, 400), ({"q": "440", "top": "many"}, 422), ({}, 422)])
def test_bad_text_queries_are_4xx_with_a_reason(client, params, status):
    r = client.get("/api/search", params=params)
    assert r.status_code == status and r.json()["error"]


def test_search_by_example_upload_and_indexed_key(client):
    r = client.post("/api/similar", files={"file": ("q.wav", wav_bytes(880), "audio/wav")}, data={"top": "3"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["key"] == "tone880.wav" and len(r.json()["results"]) == 3
    r = client.get("/api/similar", params={"key": "tone440.wav", "top": 8})
    res = r.json()["results"]
    keys = [h["key"] for h in res]
    assert r.status_code == 200 and "tone440.wav" not in keys and len(keys) == 8  # its own rows left out
    assert keys[0] == "long.wav" and res[0]["end_s"] <= 3.0  # a 300 Hz window: the nearest pitch to 440 Hz
    assert keys.index("tone220.wav") < keys.index("sub/tone3520.wav")
    assert client.get("/api/similar", params={"key": "nope.wav"}).status_code == 404


def test_zero_shot_tags_with_user_labels_default_labels_and_indexed_keys(client):
    labels = "a 440 Hz tone\na 3000 Hz tone\na 150 Hz hum"
    r = client.post("/api/tags", files={"file": ("q.wav", wav_bytes(440), "audio/wav")}, data={"labels": labels})
    tags = r.json()["tags"]
    assert r.status_code == 200 and tags[0]["label"] == "a 440 Hz tone" and len(tags) == 3
    assert sum(t["probability"] for t in tags) == pytest.approx(1.0, abs=1e-4)
    r = client.post("/api/tags", files={"file": ("q.wav", wav_bytes(440), "audio/wav")})
    assert len(r.json()["tags"]) == len(default_labels())
    r = client.get("/api/tags", params={"key": "sub/tone3520.wav", "labels": "440 Hz,3520 Hz"})
    assert r.status_code == 200 and r.json()["tags"][0]["label"] == "3520 Hz"
    assert client.get("/api/tags", params={"key": "x.wav"}).status_code == 404
    too_many = "\n".join(f"label {i}" for i in range(400))
    r = client.post("/api/tags", files={"file": ("q.wav", wav_bytes(440), "audio/wav")}, data={"labels": too_many})
    assert r.status_code == 400 and "at most" in r.json()["error"]
    r = client.get("/api/tags", params={"key": "tone440.wav", "labels": "y" * 500})
    assert r.status_code == 400


def test_example_endpoint_embeds_once_and_returns_everything(served):
    model = FrequencyCLAP()
    with make_client(served[1], model) as c:
        before = sum(model.embedded)
        r = c.post("/api/example", files={"file": ("q.wav", wav_bytes(220), "audio/wav")},
                   data={"labels": "220 Hz\n880 Hz", "top": "2"})
        body = r.json()
        assert r.status_code == 200 and body["results"][0]["key"] == "tone220.wav"
        assert body["tags"][0]["label"] == "220 Hz" and "caption" not in body
        assert body["duration_s"] == pytest.approx(0.5) and sum(model.embedded) - before == 1


class FakeCaptioner:
    def __init__(self):
        self.seen: list[tuple[str, bool]] = []

    def caption(self, source):
        self.seen.append((str(source), Path(source).is_file()))
        return f"a sound from a {Path(source).suffix} file"


def test_captions_only_with_a_captioner(client, served):
    assert client.get("/api/caption", params={"key": "tone440.wav"}).status_code == 501
    r = client.post("/api/caption", files={"file": ("q.wav", wav_bytes(440), "audio/wav")})
    assert r.status_code == 501 and "--captioner" in r.json()["error"]
    cap = FakeCaptioner()
    app = create_app(FrequencyCLAP(), served[1], captioner=cap)
    with TestClient(app, base_url=BASE) as c:
        assert c.get("/api/caption", params={"key": "tone440.wav"}).json()["caption"] == "a sound from a .wav file"
        r = c.post("/api/caption", files={"file": ("q.flac", wav_bytes(440), "audio/flac")})
        assert r.status_code == 200 and r.json()["caption"] == "a sound from a .flac file"
        r = c.post("/api/example", files={"file": ("q.wav", wav_bytes(440), "audio/wav")})
        assert r.json()["caption"] == "a sound from a .wav file"
        assert c.get("/api/status").json()["captions"] is True
    assert all(existed for _, existed in cap.seen)  # the captioner got a real file
    assert not any(Path(p).exists() for p, _ in cap.seen[1:])  # uploads' temp files are gone afterwards


def test_audio_streaming_with_ranges_only_for_indexed_keys(client, served):
    root = served[0]
    data = (root / "tone440.wav").read_bytes()
    r = client.get("/api/audio", params={"key": "tone440.wav"})
    assert r.status_code == 200 and r.content == data and r.headers["content-type"].startswith("audio/")
    assert r.headers.get("accept-ranges") == "bytes"
    r = client.get("/api/audio", params={"key": "tone440.wav"}, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    r = client.get("/api/audio", params={"key": "tone440.wav"}, headers={"Range": f"bytes={len(data) + 10}-"})
    assert r.status_code == 416
    for key in ("secret.txt", "../index/manifest.json", str(root / "tone440.wav"), "sub/../tone440.wav", ""):
        assert client.get("/api/audio", params={"key": key}).status_code == 404, key
    assert client.get("/api/audio/../../etc/passwd").status_code == 404


def test_spectrogram_png(client):
    r = client.get("/api/spectrogram", params={"key": "long.wav", "start_s": 2.6, "end_s": 4.6})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", r.content[16:24]) == (160, 48)
    low = client.get("/api/spectrogram", params={"key": "long.wav", "start_s": 0, "end_s": 2}).content
    assert low != r.content  # a 300 Hz stretch does not look like a 2000 Hz one
    assert client.get("/api/spectrogram", params={"key": "long.wav", "start_s": 99}).status_code == 422
    assert client.get("/api/spectrogram", params={"key": "nope.wav"}).status_code == 404
    assert client.get("/api/spectrogram", params={"key": "long.wav", "start_s": -1}).status_code == 422


def test_upload_bounds_are_checked_before_decoding(served, monkeypatch):
    import kikimimi.apps.serve.state as app_module

    with make_client(served[1], max_upload_bytes=64 * 1024, max_upload_s=1.0) as c:
        big = wav_bytes(440, 3.0)  # 96 kB
        r = c.post("/api/similar", files={"file": ("big.wav", big, "audio/wav")})
        assert r.status_code == 413 and "limit" in r.json()["error"]
        r = c.post("/api/similar", content=b"x" * 400_000, headers={"content-type": "application/octet-stream"})
        assert r.status_code == 413  # refused on its declared length

        def chunks():
            for _ in range(50):
                yield b"y" * 10_000

        r = c.post("/api/similar", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413  # no length declared: counted, refused past the limit

        def must_not_decode(*args, **kwargs):
            raise AssertionError("decoded a clip that is longer than the limit")

        monkeypatch.setattr(app_module, "load_audio", must_not_decode)
        r = c.post("/api/similar", files={"file": ("long.wav", wav_bytes(440, 1.5), "audio/wav")})
        assert r.status_code == 413 and r.json()["kind"] == "too_long"


def test_full_pool_answers_503_with_retry_after(served):
    with make_client(served[1], workers=1, queue_limit=0, retry_after_s=3) as c:
        pool = c.app.state.kikimimi.pool
        gate = threading.Event()
        job = pool.submit(gate.wait, 30)  # the only slot is taken
        try:
            r = c.get("/api/search", params={"q": "440"})
            assert r.status_code == 503 and r.headers["retry-after"] == "3" and "busy" in r.json()["error"]
            r = c.post("/api/similar", files={"file": ("q.wav", wav_bytes(440), "audio/wav")})
            assert r.status_code == 503
            assert c.get("/api/status").status_code == 200  # status never waits for the pool
        finally:
            gate.set()
            job.result(timeout=10)
        assert c.get("/api/search", params={"q": "440"}).status_code == 200
        assert pool.stats()["rejected"] == 2


class BrokenModel(FrequencyCLAP):
    def encode_text(self, texts):
        raise RuntimeError("secret detail at /home/user/model.py line 42")


def test_failures_answer_without_stack_traces(served):
    app = create_app(BrokenModel(), served[1])
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        r = c.get("/api/search", params={"q": "440"})
        assert r.status_code == 500 and r.json() == {"error": "internal error"}
        assert "Traceback" not in r.text and "secret" not in r.text


def test_host_header_and_token(served):
    with make_client(served[1]) as c:
        r = c.get("/api/status", headers={"host": "evil.example:8000"})
        assert r.status_code == 421  # DNS rebinding: another site's name pointing at 127.0.0.1
        assert c.get("/api/status", headers={"host": "localhost:8000"}).status_code == 200
    secret = "s3cret-s3cret-s3cret"
    with make_client(served[1], token=secret) as c:
        assert c.get("/api/status").status_code == 401
        assert c.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/status", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        r = c.get("/", params={"token": secret})
        assert r.status_code == 200 and f"kikimimi_token={secret}" in r.headers["set-cookie"]
        assert c.get("/api/audio", params={"key": "tone440.wav"}).status_code == 200  # the cookie now
        c.cookies.clear()
        assert c.get("/api/audio", params={"key": "tone440.wav"}).status_code == 401


def test_binding_rules():
    assert check_bind("127.0.0.1", None) is None and check_bind("localhost", None) is None
    assert check_bind("::1", None) is None
    with pytest.raises(BindRefused, match="--token"):
        check_bind("0.0.0.0", None)
    assert "warning" in check_bind("0.0.0.0", "t")


def test_rescan_picks_up_new_files(served, tmp_path):
    import shutil

    root = tmp_path / "lib"
    shutil.copytree(served[0], root)
    index = tmp_path / "index"
    update_index(FrequencyCLAP(), root, index, model_id="fake", window_s=2, hop_s=1)
    with make_client(index) as c:
        sf.write(root / "tone5000.wav", sine(5000, 0.5, SR), SR)
        state = c.app.state.kikimimi
        state.scan.running = True
        assert c.post("/api/rescan").status_code == 409  # one at a time
        state.scan.running = False
        assert c.post("/api/rescan").status_code == 202
        deadline = time.monotonic() + 30
        while c.get("/api/status").json()["scan"]["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        s = c.get("/api/status").json()
        assert s["files"] == 7 and s["scan"]["result"]["added"] == 1 and s["scan"]["error"] is None
        assert c.get("/api/search", params={"q": "5000 Hz", "top": 1}).json()["results"][0]["key"] == "tone5000.wav"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_on_a_folder_with_a_real_checkpoint(served, tmp_path):
    """One command on a folder: it indexes, serves, and answers a text query through MiniLM + the checkpoint."""
    import httpx
    from clap_fakes import write_tiny_clap2025

    ckpt = write_tiny_clap2025(tmp_path / "models", text_dim=384)
    (ckpt.parent / "config.json").write_text(json.dumps({"text_encoder": "minilm"}))
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kikimimi", "serve", str(served[0]), "-m", str(ckpt),
                             "--index", str(tmp_path / "idx"), "--port", str(port), "--device", "cpu"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert status is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert status["files"] == 6 and status["model"] == ckpt.resolve().name  # no absolute path
        assert str(tmp_path) not in json.dumps(status) and "pid" not in json.dumps(status)
        r = httpx.get(f"http://127.0.0.1:{port}/api/search", params={"q": "a dog barking", "top": 3}, timeout=60)
        assert r.status_code == 200 and len(r.json()["results"]) == 3
        assert (tmp_path / "idx" / "manifest.json").is_file()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "serving on http://127.0.0.1:" in out and "added 6" in out


def test_serve_command_refusals(served, tmp_path, capsys, monkeypatch):
    from kikimimi.cli import main

    assert main(["serve", str(served[1]), "--host", "0.0.0.0"]) == 2
    assert "refusing to listen" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "nowhere"), "-m", "x"]) == 2
    assert "no such folder or index" in capsys.readouterr().err
    # a folder with no -m uses the packaged open CLAP; without one installed, serve asks for a model
    from kikimimi.checkpoints import registry

    monkeypatch.setattr(registry, "default_packaged_model", lambda kind: None)
    assert main(["serve", str(served[0])]) == 2
    assert "-m MODEL" in capsys.readouterr().err


def test_captioner_flag_names_a_folder_that_is_not_a_captioner(served, tmp_path, capsys):
    from clap_fakes import write_tiny_clap2025

    from kikimimi.cli import main

    ckpt = write_tiny_clap2025(tmp_path / "models")
    assert main(["serve", str(served[0]), "-m", str(ckpt), "--no-update", "--index", str(tmp_path / "i"),
                 "--captioner", str(tmp_path / "captioner.pt"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "captioner.pt': not a captioner folder" in err and "Traceback" not in err
