"""Fault suite: downloads that cannot lie (issue 25, findings 8 and 9 and the weak download findings).

Every test runs against the local server of ``tests/model_server.py`` (127.0.0.1), which can leave out the
``Content-Length``, cut a body, drip one byte every N seconds, or serve zip bombs and error pages.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import warnings

import filelock
import pytest
from model_server import byola_file, files_under, m2d_enconly_zip, sha256, url_path, zip_bytes

from kikimimi.checkpoints import get_entry, register_model
from kikimimi.checkpoints import hub as F
from kikimimi.checkpoints.hub import (
    DiskFullError,
    FetchError,
    HashMismatchError,
    OfflineError,
    UnsafeArchiveError,
    model_dir,
    read_record,
    safe_extract,
)
from kikimimi.cli import main

ENC = get_entry("m2d-vit-base-mr7-enconly")  # zip, no published hash
D1024 = get_entry("byola-v1-d1024")  # single file, no published hash


def _serve(server, entry, data: bytes) -> str:
    path = url_path(entry)
    server.files[path] = data
    return path


def _fetch(entry):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return F.fetch(entry, accept_licence=True, progress=False)


def test_cut_download_without_length_not_installed(home, server, monkeypatch, fault_report):
    data = byola_file(d=1024)
    path = _serve(server, D1024, data)
    server.no_length.add(path)
    server.cut[path] = 1  # half the body, then the connection closes: without a length it looks complete
    with pytest.raises(FetchError, match="without a Content-Length") as info:
        _fetch(D1024)
    assert "nothing cached" in str(info.value) and "\n" not in str(info.value)
    assert read_record(D1024) is None and files_under(home) == []
    # a complete body without a length is refused too: nothing proves it complete
    with pytest.raises(FetchError, match="without a Content-Length"):
        _fetch(D1024)
    assert read_record(D1024) is None and files_under(home) == []
    # a published hash proves it: then the same server's answer is accepted
    register_model(D1024.name, D1024.url, replace=True, sha256=sha256(data))
    weights = _fetch(get_entry(D1024.name))
    assert weights.read_bytes() == data and read_record(D1024)["verified_by"] == "sha256"
    assert server.requests[path] == 3
    fault_report("fetch", cut_without_length=1, complete_without_length_refused=1, installed_truncated=0)


def test_cut_download_with_length_is_never_installed(home, server, monkeypatch, fault_report):
    path = _serve(server, D1024, byola_file(d=1024))
    monkeypatch.setattr(F, "RETRIES", 1)
    server.cut[path] = 1
    with pytest.raises(OfflineError, match="cut short|could not download"):
        _fetch(D1024)
    assert read_record(D1024) is None and files_under(home) == []
    assert _fetch(D1024).is_file() and read_record(D1024)["verified_by"] == "content-length"
    fault_report("fetch", cut_with_length=1, installed_truncated=0)


def test_models_fetch_refuses_a_truncated_cache(home, server, capsys, fault_report):
    path = _serve(server, D1024, byola_file(d=1024))
    weights = _fetch(D1024)
    weights.write_bytes(weights.read_bytes()[:1000])  # the cached file is cut after the fact
    capsys.readouterr()
    for _ in range(2):  # refused every time, never returned
        assert main(["models", "fetch", D1024.name, "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert "changed since" in err and "size 1000 bytes" in err and len(err.splitlines()) == 1
    assert server.requests[path] == 1
    fault_report("models fetch", truncated_cache_refused=2)


def _bomb_members(folder: str, n: int) -> dict[str, bytes]:
    members = {f"{folder}/weights_enconly.pth": m2d_enconly_zip(folder)}  # any real first member
    members.update({f"{folder}/pad{i}.bin": bytes(2**20) for i in range(n)})  # exactly 1 MiB of zeros each
    return members


def test_zip_member_exactly_1mib_bomb_refused(home, server, tmp_path, fault_report):
    data = zip_bytes(_bomb_members(ENC.folder_name, 8))
    assert len(data) < 150_000  # 8 MiB of padding in a few KB beside a ~100-KB weight file
    _serve(server, ENC, data)
    with pytest.raises(UnsafeArchiveError, match="expands") as info:
        _fetch(ENC)
    assert "pad0.bin" in str(info.value) and read_record(ENC) is None and files_under(home) == []
    # the guard has no size exemption: one member of exactly 1 MiB, or of 100 KiB, is checked as well
    for size in (2**20, 100 * 1024):
        archive = tmp_path / f"a{size}.zip"
        archive.write_bytes(zip_bytes({"f/zeros.bin": bytes(size)}))
        with pytest.raises(UnsafeArchiveError, match="expands"):
            safe_extract(archive, tmp_path / f"out{size}")
        assert not any((tmp_path / f"out{size}").rglob("*"))
    # small files that compress well (a config) and ordinary weights still unpack
    archive = tmp_path / "ok.zip"
    archive.write_bytes(zip_bytes({"f/config.json": b" " * 3000, "f/w.pth": os.urandom(50_000)}))
    assert len(safe_extract(archive, tmp_path / "ok")) == 2
    fault_report("fetch", zip_bomb_1mib_members=8, installed_bytes=0)


def test_zip_members_claiming_more_than_the_archive_refused(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"f/w.pth": os.urandom(5000)}))
    raw = bytearray(archive.read_bytes())
    # the central directory's compressed size of the member (offset 20 in its record) grows to 10 MB
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 20:cd + 24] = (10_000_000).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    with pytest.raises(UnsafeArchiveError, match="beyond the end|claim"):
        safe_extract(archive, tmp_path / "out")


def test_slow_drip_mirror_times_out(home, server, monkeypatch, fault_report):
    path = _serve(server, ENC, m2d_enconly_zip(ENC.folder_name))
    server.drip_s = 50.0  # one byte every 50 s
    monkeypatch.setenv(F.DEADLINE_ENV, "2")
    start = time.monotonic()
    with pytest.raises(OfflineError, match="deadline") as info:
        _fetch(ENC)
    elapsed = time.monotonic() - start
    assert elapsed < 8, elapsed
    assert str(F.manual_path(ENC)) in str(info.value) and server.requests[path] == 1
    assert files_under(home) == [] and read_record(ENC) is None
    lock = filelock.FileLock(str(home / "locks" / f"{ENC.name}.lock"))
    lock.acquire(timeout=0)  # the lock was given back
    lock.release()
    fault_report("fetch", drip_mirror_seconds_held=round(elapsed), deadline_s=2)


def test_low_speed_limit_fails_an_attempt(home, server, monkeypatch):
    _serve(server, ENC, m2d_enconly_zip(ENC.folder_name))
    server.drip_s = 0.05  # ~20 bytes/s: never silent long enough for the read timeout
    monkeypatch.setattr(F, "LOW_SPEED_WINDOW_S", 0.5)
    monkeypatch.setattr(F, "LOW_SPEED_BYTES", 1000)
    monkeypatch.setattr(F, "RETRIES", 1)
    start = time.monotonic()
    with pytest.raises(OfflineError, match="too slow"):
        _fetch(ENC)
    assert time.monotonic() - start < 5 and files_under(home) == []


def test_killed_download_leftovers_cleaned(home, server, tmp_path, fault_report):
    data = m2d_enconly_zip(ENC.folder_name)
    _serve(server, ENC, data)
    server.drip_s = 0.02  # slow enough to be killed mid-transfer
    code = "import kikimimi.checkpoints.hub as h; h.fetch('m2d-vit-base-mr7-enconly', progress=False)"
    env = {**os.environ, "KIKIMIMI_HOME": str(home), "KIKIMIMI_MODEL_MIRROR": server.url,
           "KIKIMIMI_ACCEPT_LICENCE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    parts: list = []
    while time.monotonic() < deadline and not parts:
        parts = list((home / "downloads").glob("*.part")) if (home / "downloads").is_dir() else []
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    stagings = list((home / "models").glob("*.staging"))
    assert parts and stagings, "the killed run left no .part / staging (nothing to test)"
    # files that are not ours, or whose writer is alive, are kept
    others = [home / "downloads" / ".other.abcdefgh.part", home / "downloads" / "notes.part",
              home / "downloads" / f".x.pth.kikimimi-{os.getpid()}-0badc0de.part"]
    for other in others:
        other.write_bytes(b"keep")
    server.drip_s = 0.0
    weights = _fetch(ENC)
    assert weights.is_file() and read_record(ENC)["source_sha256"] == sha256(data)
    assert not any(p.exists() for p in parts + stagings)
    assert not list((home / "models").glob("*.staging"))
    assert all(o.read_bytes() == b"keep" for o in others)
    fault_report("fetch", killed=1, leftovers_removed=len(parts) + len(stagings), others_kept=len(others))


def test_non_zip_download_one_line(home, server, capsys, fault_report):
    page = b"<!DOCTYPE html><html><body>Too many requests</body></html>"
    _serve(server, ENC, page)
    assert main(["models", "fetch", ENC.name, "--accept-licence", "--no-progress"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("kikimimi: ")]  # not the licence note
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "is not a zip archive" in errors[0] and "<!DOCTYPE" in errors[0]
    assert files_under(home) == [] and not model_dir(ENC).exists()
    fault_report("models fetch", non_zip_one_line=1)


class _FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, path):
        self.path = path
        path.write_bytes(b"")

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_disk_full_download_reported(home, server, monkeypatch, tmp_path, capsys, fault_report):
    path = _serve(server, ENC, m2d_enconly_zip(ENC.folder_name))
    monkeypatch.setattr(F, "_open_part", _FullDisk)
    with pytest.raises(DiskFullError, match=r"disk full while writing .*\.part \(\d+ MB free\)"):
        _fetch(ENC)
    assert server.requests[path] == 1  # not retried as a network error
    assert files_under(home) == []
    capsys.readouterr()
    assert main(["models", "fetch", ENC.name, "--accept-licence", "--no-progress"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("kikimimi: ")]  # not the licence note
    assert len(errors) == 1 and "disk full while writing" in errors[0] and "retrying" not in err, err
    monkeypatch.undo()
    # unpacking: a zip that expands beyond the free space is refused before anything is written
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"f/w.pth": os.urandom(20_000)}))
    monkeypatch.setattr(F.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(DiskFullError, match="needs"):
        safe_extract(archive, tmp_path / "out")
    assert not any((tmp_path / "out").rglob("*"))
    fault_report("fetch", disk_full_reported=2, retried=0)


def test_hash_mismatch_of_a_folder_against_its_config(home, server, tmp_path):
    """A kikimimi folder served over HTTP is checked against the weights_sha256 its config.json records."""
    from model_server import TINY_VIT  # noqa: F401  (the server module is importable here)

    from kikimimi.checkpoints import load_encoder, save_kikimimi

    _serve(server, ENC, m2d_enconly_zip(ENC.folder_name))
    folder = save_kikimimi(load_encoder(_fetch(ENC)), tmp_path / "mine")
    for name in ("config.json", "model.safetensors"):
        server.files[f"/models/mine/{name}"] = (folder / name).read_bytes()
    server.no_length.update({"/models/mine/config.json", "/models/mine/model.safetensors"})
    register_model("mine-http", f"{server.url}/models/mine", licence="apache-2.0")
    assert (_fetch(get_entry("mine-http")) / "model.safetensors").is_file()  # proved by the recorded hash
    assert read_record(get_entry("mine-http"))["verified_by"] == "sha256"
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    server.files["/models/mine/model.safetensors"] = bytes(raw)
    register_model("mine-http2", f"{server.url}/models/mine", licence="apache-2.0")
    with pytest.raises(HashMismatchError, match="config.json records"):
        _fetch(get_entry("mine-http2"))
    assert read_record(get_entry("mine-http2")) is None
