"""Test helper: an HTTP server on 127.0.0.1 serving generated official-layout release files.

The registry's GitHub URLs are pointed at it with ``KIKIMIMI_MODEL_MIRROR=http://127.0.0.1:PORT`` (the documented
override), so a request for ``/nttcslab/m2d/releases/download/v0.1.0/<folder>.zip`` lands here. The server counts
requests per path, can cut a transfer short after sending its ``Content-Length`` (``cut``: how many of the next
requests of a path to cut), can hold answers (``delay_s``, or ``gate`` until the test opens it), can send a body
without a ``Content-Length`` (paths in ``no_length``: the end of the body is the closed connection, as an
HTTP/1.0 server or a proxy does, so a cut one looks complete), and can drip a body one byte every ``drip_s``
seconds (a stalling mirror).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import official_layouts as ol
import torch

M2D_RELEASE = "/nttcslab/m2d/releases/download"
BYOLA_RAW = "/nttcslab/byol-a/raw/master"
#: Tiny ViT sizes for generated M2D files (the sizes that matter come from the folder name).
TINY_VIT = dict(embed_dim=32, depth=1)


class ModelServer:
    """``files``: URL path → bytes. ``requests``: Counter of GET paths. Start with :meth:`start`."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.cut: Counter[str] = Counter()
        self.delay_s = 0.0
        self.no_length: set[str] = set()
        self.drip_s = 0.0
        self.stop_event = threading.Event()  # set by stop(): ends a drip
        self.gate: threading.Event | None = None  # when set up, answers wait until the test opens it
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                with server._lock:
                    server.requests[self.path] += 1
                    cut = server.cut[self.path] > 0
                    if cut:
                        server.cut[self.path] -= 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if server.delay_s:
                    time.sleep(server.delay_s)
                if server.gate is not None:
                    server.gate.wait(timeout=60)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if self.path not in server.no_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drip_s:
                    try:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            if server.stop_event.wait(server.drip_s):
                                break
                    except OSError:  # the client gave up
                        pass
                    self.close_connection = True
                    return
                if cut:  # half the promised bytes, then the connection closes
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def start(self) -> ModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A deflated zip of ``members`` (member name → bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def m2d_release_zip(folder: str, inner: str = "checkpoint-300.pth", *, input_size=(80, 608),
                    patch_size=(16, 16)) -> bytes:
    """A release zip ``<folder>/<inner>`` holding a tiny full training checkpoint in the official layout."""
    state = ol.m2d_full_state(input_size=input_size, patch_size=patch_size, decoder_dim=16, decoder_depth=1,
                              **TINY_VIT)
    with tempfile.TemporaryDirectory() as tmp:
        data = ol.write_training_checkpoint(Path(tmp) / inner, state).read_bytes()
    return zip_bytes({f"{folder}/{inner}": data})


def m2d_enconly_zip(folder: str, inner: str = "weights_enconly.pth", **sizes) -> bytes:
    """A release zip ``<folder>/<inner>`` holding a tiny encoder-only state dict."""
    return zip_bytes({f"{folder}/{inner}": torch_bytes(ol.m2d_encoder_state(**TINY_VIT, **sizes))})


def byola_file(d: int = 64) -> bytes:
    """A BYOL-A v1 ``AudioNTT2020`` state dict with a small ``d``."""
    return torch_bytes(ol.byola_v1(d=d))


def isolated_home(tmp_path: Path, monkeypatch, server: ModelServer) -> Path:
    """Point the kikimimi home at ``tmp_path/home`` and official URLs at ``server``; no retries' back-off;
    a clean in-process registry; no offline / licence variables from the caller's environment."""
    from kikimimi.checkpoints import hub, registry

    home = tmp_path / "home"
    monkeypatch.setenv("KIKIMIMI_HOME", str(home))
    monkeypatch.setenv("KIKIMIMI_MODEL_MIRROR", server.url)
    monkeypatch.delenv("KIKIMIMI_OFFLINE", raising=False)
    monkeypatch.delenv("KIKIMIMI_ACCEPT_LICENCE", raising=False)
    monkeypatch.setattr(hub, "BACKOFF_S", 0.0)
    monkeypatch.setattr(registry, "_registered", {})
    return home


def url_path(entry) -> str:
    """The path part of an official entry's URL (what the mirror receives)."""
    assert entry.url.startswith("https://github.com/")
    return entry.url[len("https://github.com"):]


def files_under(root: Path) -> list[Path]:
    """Every file below ``root`` except lock files."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")

