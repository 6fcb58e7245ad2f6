"""Fault suite: `kikimimi serve` attacked as a hostile client and a careless operator would (issue 25, items 3
and 4 and the weak findings): files swapped for links after indexing, an edited manifest, idle connections,
chunked and lying bodies, a FLAC that decodes to gigabytes, cross-site posts, short and guessed tokens,
malformed parameters, what status tells, a bad port. Every test reproduces one finding at small scale (the
full-size attacks: benchmarks/bench_serve_attacks.py); the network is 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP

from kikimimi.inference.search import MANIFEST, update_index

from .inputs import tone

pytest.importorskip("fastapi", reason='kikimimi serve needs pip install "kikimimi[serve]"')
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import kikimimi.apps.serve.state as state_module  # noqa: E402
from kikimimi.apps.serve.app import ServeSettings, create_app  # noqa: E402
from kikimimi.apps.serve.security import GuardMiddleware  # noqa: E402
from kikimimi.apps.serve.server import ConnectionLimits, server_config  # noqa: E402

BASE = "http://127.0.0.1"
TOKEN = "a-token-of-24-characters"
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot for the web\n" * 20


@pytest.fixture
def library(tmp_path):
    """``lib/`` (a.wav 220 Hz, b.wav 660 Hz) indexed into ``index/``, and a secret outside ``lib/``."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for name, f in (("a.wav", 220.0), ("b.wav", 660.0)):
        sf.write(lib / name, tone(0.5, f), 16000)
    update_index(FrequencyCLAP(), lib, tmp_path / "index", model_id="fake")
    (tmp_path / "private").mkdir()
    secret = tmp_path / "private" / "id_ed25519"
    secret.write_bytes(SECRET)
    return lib, tmp_path / "index", secret


def client(index, **settings) -> TestClient:
    return TestClient(create_app(FrequencyCLAP(), index, settings=ServeSettings(**settings)), base_url=BASE)


def _write_manifest(index: Path, manifest: dict) -> None:
    """Write an edited manifest as an attacker who can edit it would: with its entries checksum (a plain
    digest, no secret) recomputed, so only the server's own checks stand between it and the files."""
    from kikimimi.inference import search

    digest = getattr(search, "_entries_digest", None)
    if digest is not None and isinstance(manifest.get("checksums"), dict):
        manifest["checksums"]["entries"] = digest(manifest["entries"])
    (index / MANIFEST).write_text(json.dumps(manifest))


def _swap(path: Path, make) -> None:
    path.unlink()
    make(path)


# ------------------------------------------------------------------ 25.3: serve reads only what it indexed
def test_symlink_swap_not_streamed(library, fault_report):
    lib, index, secret = library
    named_wav = secret.with_name("key.wav")  # a target outside the folder with an audio name
    named_wav.write_bytes(SECRET)
    with client(index) as c:
        assert c.get("/api/audio", params={"key": "a.wav"}).status_code == 200
        answers = []
        for target in (secret, named_wav, lib / "b.wav"):
            _swap(lib / "a.wav", lambda p, t=target: p.symlink_to(t))
            for url in ("/api/audio", "/api/spectrogram", "/api/caption"):
                r = c.get(url, params={"key": "a.wav"})
                answers.append(r.status_code)
                assert SECRET[:20] not in r.content and str(secret.parent) not in r.text
            assert c.get("/api/audio", params={"key": "a.wav"}).status_code in (404, 409)
        # inside the folder but another file than the one indexed: refused until re-indexed
        r = c.get("/api/audio", params={"key": "a.wav"})
        assert r.status_code == 409 and "re-index to serve it" in r.json()["error"]
        assert c.get("/api/audio", params={"key": "b.wav"}).status_code == 200  # the rest still served
    assert all(400 <= s < 500 for s in answers)
    fault_report("serve", link_targets=3, endpoints=3, streamed=0)


def test_hardlink_swap_refused(library, fault_report):
    lib, index, secret = library
    loot = secret.with_name("loot.wav")
    loot.write_bytes(SECRET)
    with client(index) as c:
        _swap(lib / "a.wav", lambda p: os.link(loot, p))
        r = c.get("/api/audio", params={"key": "a.wav"})
        assert r.status_code == 409 and r.json() == {"error": "the file changed since it was indexed; re-index to "
                                                              "serve it"}
        assert SECRET[:20] not in r.content
    # the same swap with size and time forged to match the index: caught by the recorded inode
    manifest = json.loads((index / MANIFEST).read_text())
    entry = next(e for e in manifest["entries"] if e["key"] == "b.wav")
    st = os.stat(lib / "b.wav")
    entry |= {"dev": st.st_dev, "ino": st.st_ino}
    _write_manifest(index, manifest)
    forged = secret.with_name("forged.wav")
    forged.write_bytes(SECRET[:1].ljust(entry["size"], b"k"))
    os.utime(forged, ns=(entry["mtime_ns"], entry["mtime_ns"]))
    with client(index) as c:
        assert c.get("/api/audio", params={"key": "b.wav"}).status_code == 200
        _swap(lib / "b.wav", lambda p: os.link(forged, p))
        now = os.stat(lib / "b.wav")
        assert (now.st_size, now.st_mtime_ns) == (entry["size"], entry["mtime_ns"])  # same size and time
        r = c.get("/api/audio", params={"key": "b.wav"})
        assert r.status_code == 409 and b"kkkk" not in r.content
    fault_report("serve", hard_links=2, streamed=0)


def test_manifest_outside_root_refused(library, fault_report):
    lib, index, secret = library
    manifest = json.loads((index / MANIFEST).read_text())
    a, b = manifest["entries"]
    a["path"] = "/etc/passwd"  # key a.wav, path edited
    b["key"], b["path"] = "../private/id_ed25519.wav", str(secret)  # a key leaving the folder
    _write_manifest(index, manifest)
    with client(index) as c:
        for key in ("a.wav", "../private/id_ed25519.wav"):
            for url in ("/api/audio", "/api/spectrogram", "/api/caption", "/api/similar", "/api/tags"):
                r = c.get(url, params={"key": key})
                assert r.status_code == 404, (url, key, r.text)
                assert b"root:" not in r.content and SECRET[:20] not in r.content
        assert c.get("/api/status").json()["not_served"] == 2
        assert c.get("/api/search", params={"q": "220 Hz"}).json()["results"] == []  # not even listed
    # the recorded root moved to /etc, a key naming passwd: not an audio name, never opened
    manifest["root"], a["key"], a["path"] = "/etc", "passwd", "/etc/passwd"
    _write_manifest(index, manifest)
    with client(index) as c:
        r = c.get("/api/audio", params={"key": "passwd"})
        assert r.status_code == 404 and b"root:" not in r.content
    # serving a folder: an index whose recorded root is another folder is refused at start
    from kikimimi.inference.search import SearchIndexError

    with pytest.raises(SearchIndexError, match="indexes '/etc'"):
        create_app(FrequencyCLAP(), index, settings=ServeSettings(root=str(lib)))
    fault_report("serve", edited_entries=4, streamed=0)


# ------------------------------------------------------------------ 25.4: hostile clients
class _Server:
    """A uvicorn server on 127.0.0.1 in a thread."""

    def __init__(self, config: uvicorn.Config) -> None:
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> tuple[str, int]:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return "127.0.0.1", self.server.servers[0].sockets[0].getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _get(addr, path: str, token: str = TOKEN, timeout: float = 5.0) -> int:
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                  "Connection: close\r\n\r\n".encode())
        head = s.recv(4096)
    return int(head.split()[1])


def test_idle_connections_do_not_starve_authorised(library, fault_report):
    lib, index, _ = library
    app = create_app(FrequencyCLAP(), index, settings=ServeSettings(token=TOKEN))
    # the finding, at small scale: uvicorn's own limit counts idle sockets, and everyone gets 503
    with _Server(uvicorn.Config(app, port=0, log_level="error", limit_concurrency=8)) as addr:
        idle = [socket.create_connection(addr) for _ in range(10)]
        time.sleep(0.2)
        before = _get(addr, "/api/status")
        for s in idle:
            s.close()
    assert before == 503
    limits = ConnectionLimits(header_timeout_s=1.0, per_client=8, total=8)
    with _Server(server_config(app, "127.0.0.1", 0, limits, log_level="error")) as addr:
        idle = [socket.create_connection(addr) for _ in range(10)]
        idle[0].sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers started, never ended
        time.sleep(0.2)
        statuses = [_get(addr, "/api/status") for _ in range(5)]  # authorised: served
        unauthorised = _get(addr, "/api/status", token="wrong-wrong-wrong-wrong")
        time.sleep(1.5)  # past the header deadline: the idle sockets are closed by the server
        closed = 0
        for s in idle:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, TimeoutError):
                closed += 1
            s.close()
    assert statuses == [200] * 5 and unauthorised == 401
    assert closed == 10
    fault_report("serve", idle_connections=10, limit=8, authorised_served=5, idle_closed=closed)


async def _drive(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> int:
    """Run one POST with body ``chunks`` through the ASGI ``app``; returns the answer's status."""
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/similar", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), *headers], "client": ("127.0.0.1", 1)}
    await app(scope, receive, send)
    return sent[0]["status"]


def test_chunked_body_bypass_refused(library, tmp_path, fault_report):
    received = {"bytes": 0}

    async def inner(scope, receive, send):  # an app that reads every byte it is given, as a form parser would
        while True:
            message = await receive()
            received["bytes"] += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limit = 64 * 1024
    guard = GuardMiddleware(inner, allowed_hosts=["127.0.0.1"], token=None, max_body_bytes=limit)
    chunks = [b"x" * 10_000] * 50  # 500 kB
    cases = {"chunked": [(b"transfer-encoding", b"chunked")],
             "lying length": [(b"content-length", b"5")],  # what a lenient HTTP parser passes on
             "both": [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]}
    statuses = {}
    for name, headers in cases.items():
        received["bytes"] = 0
        statuses[name] = asyncio.run(_drive(guard, headers, chunks))
        assert received["bytes"] <= limit, (name, received)
    assert statuses == {"chunked": 413, "lying length": 413, "both": 400}
    # over a real socket: Content-Length 5 + chunked is refused and nothing past the limit reaches a temp file
    spool = tmp_path / "spool"
    spool.mkdir()
    app = create_app(FrequencyCLAP(), library[1], settings=ServeSettings(max_upload_bytes=limit))
    import tempfile

    old, tempfile.tempdir = tempfile.tempdir, str(spool)
    try:
        with _Server(server_config(app, "127.0.0.1", 0, log_level="error")) as addr:
            with socket.create_connection(addr, timeout=10) as s:
                s.sendall(b"POST /api/similar HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                          b"Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n")
                try:
                    for _ in range(60):
                        s.sendall(b"2710\r\n" + b"z" * 10_000 + b"\r\n")
                except OSError:
                    pass  # the server closed the connection: good
                head = s.recv(4096)
    finally:
        tempfile.tempdir = old
    assert int(head.split()[1]) in (400, 413)
    assert sum(f.stat().st_size for f in spool.rglob("*") if f.is_file()) <= limit
    fault_report("serve", body_attacks=4, bytes_past_limit=0)


def test_huge_headers_refused(library, fault_report):
    """h11 bounds headers only while they arrive in pieces: 40 kB sent at once are refused here (431)."""
    with client(library[1]) as c:
        r = c.get("/api/status", headers={"X-Padding": "a" * 40_000})
        assert r.status_code == 431 and "headers" in r.json()["error"]
        assert c.get("/api/status", params={"q": "b" * 40_000}).status_code == 431
        assert c.get("/api/status").status_code == 200
    fault_report("serve", huge_headers=2, accepted=0)


def test_slow_body_times_out(fault_report):
    """A client that sends its headers and then a body byte now and then is cut off at the body deadline."""

    async def inner(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = GuardMiddleware(inner, allowed_hosts=["127.0.0.1"], token=None, max_body_bytes=1 << 20,
                            body_timeout_s=0.3)
    sent = []

    async def trickle():
        await asyncio.sleep(0.1)
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/similar", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"transfer-encoding", b"chunked")], "client": ("127.0.0.1", 1)}
    t0 = time.monotonic()
    asyncio.run(guard(scope, trickle, send))
    took = time.monotonic() - t0
    assert sent[0]["status"] == 408 and took < 2.0
    assert (b"connection", b"close") in sent[0]["headers"]
    fault_report("serve", slow_bodies=1, held_s=round(took, 1))


def test_flac_memory_bomb_refused_before_decode(library, monkeypatch, fault_report):
    """8 channels at 384 kHz: 4 s here (12.3 M samples, over the default 11.5 M); the 119-s original in the
    benchmark. Refused on its header, before any decoding."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=384_000, channels=8, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((384_000, 8), dtype=np.int16)
        for _ in range(4):
            f.write(block)
    data = buf.getvalue()
    assert len(data) < 400_000  # small on the wire

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded a clip whose decoded size is over the limit")

    monkeypatch.setattr(state_module, "load_audio", must_not_decode)
    with client(library[1]) as c:
        r = c.post("/api/example", files={"file": ("bomb.flac", data, "audio/flac")})
    assert r.status_code == 413 and r.json()["kind"] == "too_large" and "8 channels" in r.json()["error"]
    fault_report("serve", bomb_bytes=len(data), decoded=0)


def test_cross_origin_post_refused(library, fault_report):
    wav = io.BytesIO()
    sf.write(wav, tone(0.5, 220.0), 16000, format="WAV")
    files = {"file": ("q.wav", wav.getvalue(), "audio/wav")}
    refused = 0
    with client(library[1]) as c:
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9"},
                        {"Sec-Fetch-Site": "cross-site"}):
            r = c.post("/api/example", files=files, headers=headers)
            assert r.status_code == 403 and "cross-origin" in r.json()["error"], headers
            assert c.post("/api/rescan", headers=headers).status_code == 403
            refused += 2
        assert c.post("/api/example", files=files, headers={"Origin": BASE}).status_code == 200  # its own page
        assert c.post("/api/example", files=files).status_code == 200  # no Origin: not a browser
        assert c.get("/api/search", params={"q": "220"}, headers={"Origin": "http://evil.example"}).status_code == 200
    fault_report("serve", cross_origin_posts=refused, accepted=0)


def test_short_token_refused(library, capsys, fault_report):
    from kikimimi.cli import main

    with pytest.raises(ValueError, match="at least 16"):
        ServeSettings(token="s3cret")
    assert main(["serve", str(library[1]), "--token", "abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert "at least 16" in err and len(err.splitlines()) == 1
    # a non-ASCII token works in the header, in ?token= and in the cookie that sets
    token = "mot-de-passe-été-キキミミ"
    with client(library[1], token=token) as c:
        assert c.get("/api/status", headers={"Authorization": f"Bearer {token}".encode()}).status_code == 200
        assert c.get("/api/status").status_code == 401
        r = c.get("/", params={"token": token})
        assert r.status_code == 200 and "kikimimi_token=" in r.headers["set-cookie"]
        assert c.get("/api/status").status_code == 200  # the cookie now
    fault_report("serve", short_tokens_refused=2, non_ascii_ok=1)


def test_failed_token_rate_limited(library, fault_report):
    app = create_app(FrequencyCLAP(), library[1], settings=ServeSettings(token=TOKEN, failed_token_burst=3,
                                                                         failed_token_per_s=1.0))
    limiter = next(m.kwargs["limiter"] for m in app.user_middleware if "limiter" in m.kwargs)
    now = [1000.0]
    limiter.clock = lambda: now[0]  # the test's clock: no sleeping, no flakiness
    right = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app, base_url=BASE) as c:
        codes = [c.get("/api/status", headers={"Authorization": f"Bearer guess-{i:019d}"}).status_code
                 for i in range(20)]
        r = c.get("/api/status", headers=right)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # no guess is checked while limited
        now[0] += 1.0  # one attempt a second comes back
        assert c.get("/api/status", headers=right).status_code == 200
        assert c.get("/api/status", headers={"Authorization": "Bearer x" * 3}).status_code == 401
        assert c.get("/api/status", headers=right).status_code == 429
    assert codes == [401] * 3 + [429] * 17
    fault_report("serve", guesses=20, checked=codes.count(401))


def test_labels_commas_is_400(library, fault_report):
    wav = io.BytesIO()
    sf.write(wav, tone(0.5, 220.0), 16000, format="WAV")
    bad = 0
    with client(library[1]) as c:
        for labels in (",,,", " , ,\n", "\n,\n"):
            r = c.get("/api/tags", params={"key": "a.wav", "labels": labels})
            assert r.status_code == 400 and "no label" in r.json()["error"], labels
            bad += 1
        r = c.post("/api/tags", files={"file": ("q.wav", wav.getvalue(), "audio/wav")}, data={"labels": ",,,"})
        assert r.status_code == 400
        many = ",".join(f"l{i}" for i in range(65))
        r = c.get("/api/tags", params={"key": "a.wav", "labels": many})
        assert r.status_code == 400 and "at most 64" in r.json()["error"]
        for url, params in (("/api/search", {"q": "x", "top": "many"}), ("/api/spectrogram",
                            {"key": "a.wav", "start_s": "inf"}), ("/api/search", {"q": "x", "segments": "maybe"}),
                            ("/api/spectrogram", {"key": "a.wav", "start_s": "nan"})):
            r = c.get(url, params=params)
            assert 400 <= r.status_code < 500 and len(r.json()["error"].splitlines()) == 1, (url, params, r.text)
            bad += 1
        assert c.get("/api/tags", params={"key": "a.wav", "labels": "220 Hz,660 Hz"}).status_code == 200
    fault_report("serve", malformed=bad + 2, server_errors=0)


def test_status_hides_paths_and_pids(library, tmp_path, fault_report):
    with client(library[1], token=TOKEN) as c:
        text = c.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).text
    body = json.loads(text)

    def keys(x):
        if isinstance(x, dict):
            for k, v in x.items():
                yield k
                yield from keys(v)

    assert str(tmp_path) not in text and "/" not in json.dumps(body["model"]) and body["root"] == "lib"
    assert not [k for k in keys(body) if "pid" in k.lower() or "path" in k.lower()]
    assert TOKEN not in text
    fault_report("serve", absolute_paths=0, pids=0)


def test_bad_port_one_line(library, capsys, fault_report):
    from kikimimi.cli import main

    for port in ("99999", "0", "-1"):
        assert main(["serve", str(library[1]), "--port", port]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--port" in err and "Traceback" not in err
    for flag in ("--body-timeout-s", "--header-timeout-s", "--max-labels", "--max-connections-per-client"):
        assert main(["serve", str(library[1]), flag, "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and flag in err
    fault_report("serve", bad_ports=3, bad_limits=4, tracebacks=0)
