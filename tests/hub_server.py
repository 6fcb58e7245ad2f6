"""Test helper: a tiny Hugging Face Hub on 127.0.0.1 answering the requests ``huggingface_hub`` makes.

Point the library at it with ``HF_ENDPOINT=http://127.0.0.1:PORT`` (kikimimi passes the variable on each call).
It keeps repositories in memory as commits (``{path: bytes}``) and answers:

- ``GET /api/models/{owner}/{name}[/revision/{rev}]``: ``{"id", "sha", "siblings": [{"rfilename"}]}``
  (what ``snapshot_download`` lists);
- ``GET /api/models/{owner}/{name}/tree/{rev}``: the files with size, git blob id and, for weight files, the
  LFS SHA-256;
- ``HEAD|GET /{owner}/{name}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` (the SHA-256 of
  a weight file, else its git blob id, quoted) and ``Content-Length`` (what ``hf_hub_download`` needs);
- ``POST /api/repos/create``, ``POST /api/models/{repo}/preupload/{rev}`` (every file "regular") and
  ``POST /api/models/{repo}/commit/{rev}`` (the NDJSON commit with base64 contents): what ``upload_folder`` sends.

``requests`` counts the request lines (``"GET /api/..."``); ``refs`` maps ``(repo, branch or tag)`` to a commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def is_lfs(name: str) -> bool:
    """Files the real Hub keeps in LFS: weights (the ETag is then the SHA-256 of the content)."""
    return name.endswith((".safetensors", ".bin", ".pth", ".onnx"))


def git_blob_id(body: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


def etag(name: str, body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() if is_lfs(name) else git_blob_id(body)


def tree_entry(name: str, body: bytes) -> dict:
    """One ``/api/models/{repo}/tree/{rev}`` entry, as the Hub lists it."""
    entry = {"type": "file", "path": name, "size": len(body), "oid": git_blob_id(body)}
    if is_lfs(name):
        entry["lfs"] = {"oid": hashlib.sha256(body).hexdigest(), "size": len(body), "pointerSize": 134}
    return entry


class HubServer:
    """Start with :meth:`start`; ``url`` is the endpoint; :meth:`add_commit` publishes files."""

    def __init__(self) -> None:
        self.commits: dict[tuple[str, str], dict[str, bytes]] = {}  # (repo, sha) -> files
        self.refs: dict[tuple[str, str], str] = {}  # (repo, branch|tag) -> sha
        self.requests: Counter[str] = Counter()
        self.pushed: list[dict] = []  # the commit headers received
        self._lock = threading.Lock()
        self._n = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _json(self, obj, status: int = 200) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _missing(self, what: str, code: str = "RepoNotFound") -> None:
                body = json.dumps({"error": what}).encode()
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", what)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, head: bool) -> None:
                parts = unquote(urlsplit(self.path).path).strip("/").split("/")
                repo, rev, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                sha = hub.resolve(repo, rev)
                if sha is None:
                    self._missing(f"{repo}@{rev}", "RevisionNotFound" if hub.has_repo(repo) else "RepoNotFound")
                    return
                body = hub.commits[(repo, sha)].get(name)
                if body is None:
                    self._missing(name, "EntryNotFound")
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", sha)
                self.send_header("ETag", f'"{etag(name, body)}"')
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head: bool = False) -> None:
                path = unquote(urlsplit(self.path).path)
                with hub._lock:
                    hub.requests[f"{self.command} {path}"] += 1
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
                    repo, sha = "/".join(parts[2:4]), hub.resolve("/".join(parts[2:4]), parts[5])
                    if sha is None:
                        self._missing(f"{repo}@{parts[5]}", "RevisionNotFound")
                        return
                    prefix = "/".join(parts[6:])
                    self._json([tree_entry(name, body) for name, body in sorted(hub.commits[(repo, sha)].items())
                                if name.startswith(prefix)])
                elif parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo = "/".join(parts[2:4])
                    rev = "/".join(parts[5:]) if len(parts) > 5 and parts[4] == "revision" else "main"
                    sha = hub.resolve(repo, rev)
                    if sha is None:
                        self._missing(f"{repo}@{rev}", "RevisionNotFound" if hub.has_repo(repo) else "RepoNotFound")
                        return
                    files = sorted(hub.commits[(repo, sha)])
                    self._json({"id": repo, "modelId": repo, "sha": sha, "private": False,
                                "siblings": [{"rfilename": f} for f in files]})
                elif len(parts) >= 5 and parts[2] == "resolve":
                    self._file(head)
                else:
                    self._missing(path, "EntryNotFound")

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                self._route()

            def do_HEAD(self) -> None:  # noqa: N802
                self._route(head=True)

            def do_POST(self) -> None:  # noqa: N802
                path = unquote(urlsplit(self.path).path)
                with hub._lock:
                    hub.requests[f"POST {path}"] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = path.strip("/").split("/")
                if path == "/api/repos/create":
                    payload = json.loads(body or b"{}")
                    repo = f"{payload.get('organization') or 'user'}/{payload['name']}"
                    self._json({"url": f"{hub.url}/{repo}", "name": repo})
                elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]})
                elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit":
                    repo, branch = "/".join(parts[2:4]), "/".join(parts[5:])
                    files, header = {}, {}
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "header":
                            header = item["value"]
                        elif item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    hub.pushed.append(header)
                    base = hub.resolve(repo, branch)
                    merged = {**(hub.commits[(repo, base)] if base else {}), **files}
                    sha = hub.add_commit(repo, merged, branch=branch)
                    self._json({"commitUrl": f"{hub.url}/{repo}/commit/{sha}", "commitOid": sha,
                                "pullRequestUrl": None})
                else:
                    self._missing(path, "EntryNotFound")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def has_repo(self, repo: str) -> bool:
        return any(r == repo for r, _ in self.refs)

    def resolve(self, repo: str, rev: str) -> str | None:
        if (repo, rev) in self.commits:
            return rev
        return self.refs.get((repo, rev))

    def add_commit(self, repo: str, files: dict[str, bytes], *, branch: str = "main", tag: str | None = None) -> str:
        """Publish ``files`` as a new commit on ``branch`` (and ``tag``); returns the 40-hex commit id."""
        with self._lock:
            self._n += 1
            sha = hashlib.sha1(f"{repo}|{self._n}".encode()).hexdigest()
            self.commits[(repo, sha)] = dict(files)
            self.refs[(repo, branch)] = sha
            if tag:
                self.refs[(repo, tag)] = sha
        return sha

    def publish_folder(self, repo: str, folder: Path, **kwargs) -> str:
        """Publish every file under ``folder`` (paths relative to it)."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_commit(repo, files, **kwargs)


def hub_environment(monkeypatch, tmp_path: Path, server: HubServer) -> Path:
    """Point ``huggingface_hub`` at ``server`` with an empty cache under ``tmp_path`` (returned), online.

    The library reads ``HF_HUB_OFFLINE`` and the cache folder once at import, so its constants are patched too;
    kikimimi reads ``HF_ENDPOINT`` at each call. Models load in float32 (``KIKIMIMI_PRECISION``).
    Set ``huggingface_hub.constants.HF_HUB_OFFLINE = True`` (through
    ``monkeypatch``) to go offline.
    """
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("KIKIMIMI_OFFLINE", raising=False)
    monkeypatch.setenv("KIKIMIMI_PRECISION", "fp32")  # no CPU-path measurement at each load: these tests are I/O
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    return cache
