"""Models by name: download, cache reuse, hashes, cut transfers, two processes, unsafe zips, offline, licence.

Everything runs against a local HTTP server on 127.0.0.1 (``tests/model_server.py``) serving generated
official-layout files; the registry's GitHub URLs reach it through ``KIKIMIMI_MODEL_MIRROR``.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch
from model_server import (
    byola_file,
    files_under,
    m2d_enconly_zip,
    m2d_release_zip,
    sha256,
    torch_bytes,
    url_path,
    zip_bytes,
)

import kikimimi
from kikimimi.checkpoints import get_entry, load_encoder, register_model, registry, save_kikimimi
from kikimimi.checkpoints import hub as F
from kikimimi.checkpoints.hub import (
    HashMismatchError,
    LicenceNotAcceptedError,
    OfflineError,
    UnsafeArchiveError,
    manual_path,
    model_dir,
    read_record,
    safe_extract,
)
from kikimimi.inference import hear

MR7 = get_entry("m2d-vit-base-mr7")
ENC = get_entry("m2d-vit-base-mr7-enconly")
D512 = get_entry("byola-v1-d512")


def _serve(server, entry, data: bytes) -> str:
    path = url_path(entry)
    server.files[path] = data
    return path


def _quiet_load(name, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kikimimi.load(name, **kwargs)


# ------------------------------------------------------------------------------------ download + reuse
def test_download_then_cache_reuse_makes_no_request(home, server):
    data = m2d_release_zip(MR7.folder_name)
    path = _serve(server, MR7, data)
    model = _quiet_load("m2d-vit-base-mr7", accept_licence=True)
    assert server.requests[path] == 1
    assert model.embedding_dim == 5 * 32 and model.sample_rate == 16000
    weights = home / "models" / MR7.name / MR7.folder_name / "checkpoint-300.pth"
    assert weights.is_file()
    record = read_record(MR7)
    assert record["source_sha256"] == sha256(data) and record["source_size"] == len(data)
    assert record["weights"] == f"{MR7.folder_name}/checkpoint-300.pth"
    # nothing but the model folder (record + weights) is left: no .part file, no staging folder, no zip
    assert files_under(home) == sorted([weights, model_dir(MR7) / "kikimimi-download.json"])
    again = _quiet_load("m2d-vit-base-mr7")  # cached: no licence question, no request
    assert server.requests[path] == 1
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    np.testing.assert_allclose(again.embed(wave), model.embed(wave), atol=1e-6)


def test_hear_and_alias_accept_names(home, server):
    _serve(server, MR7, m2d_release_zip(MR7.folder_name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = hear.load_model("m2d", accept_licence=True)  # alias of m2d-vit-base-mr7
    scene = hear.get_scene_embeddings(torch.zeros(2, 16000), model)
    assert scene.shape == (2, 160)


def test_load_clap_by_name(home, server):
    import official_layouts as ol

    entry = get_entry("m2d-clap-2025")
    state = ol.clap2025(embed_dim=32, depth=1)
    inner = torch_bytes({"model": state})
    _serve(server, entry, zip_bytes({f"{entry.folder_name}/checkpoint-30.pth": inner}))
    register_model(entry.name, entry.url, replace=True, inner_sha256=sha256(inner))  # the real file is pinned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clap = kikimimi.load_clap("m2d-clap-2025", accept_licence=True)
    emb = clap.encode_audio(np.zeros(16000, dtype=np.float32))
    assert emb.shape == (32,) and clap.audio.bundle.text_encoder_state


# ------------------------------------------------------------------------------------ hashes
def test_known_hash_mismatch_refused_and_nothing_cached(home, server):
    data = byola_file(d=512)
    path = _serve(server, D512, data)
    with pytest.raises(HashMismatchError, match="refused, nothing cached"):
        F.fetch(D512, accept_licence=True, progress=False)
    assert server.requests[path] == 1
    assert files_under(home) == [] and not model_dir(D512).exists()
    # with the right pin the same bytes are accepted
    register_model("byola-v1-d512", D512.url, replace=True, sha256=sha256(data), size_bytes=len(data))
    model = _quiet_load("byola-v1-d512", accept_licence=True, norm_stats=(-9.0, 4.0))
    assert model.embedding_dim == 512 and read_record(get_entry("byola-v1-d512"))["source_sha256"] == sha256(data)


def test_first_download_hash_recorded_and_a_changed_file_refused(home, server):
    data = m2d_enconly_zip(ENC.folder_name)
    path = _serve(server, ENC, data)
    weights = F.fetch(ENC, accept_licence=True, progress=False)
    record = read_record(ENC)
    assert record["source_sha256"] == sha256(data)
    assert record["files"][record["weights"]]["sha256"] == sha256(weights.read_bytes())
    F.fetch(ENC)  # verified, no request
    assert server.requests[path] == 1
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(raw))
    with pytest.raises(HashMismatchError, match="changed since"):
        kikimimi.load(ENC.name)
    assert F.remove(ENC) and not model_dir(ENC).exists()
    assert F.fetch(ENC, accept_licence=True, progress=False).read_bytes() != bytes(raw)
    assert server.requests[path] == 2


# ------------------------------------------------------------------------------------ cut transfers
def test_cut_transfer_leaves_no_partial_and_a_retry_completes(home, server, monkeypatch):
    data = m2d_enconly_zip(ENC.folder_name)
    path = _serve(server, ENC, data)
    monkeypatch.setattr(F, "RETRIES", 1)
    server.cut[path] = 1
    with pytest.raises(OfflineError, match="could not download") as info:
        F.fetch(ENC, accept_licence=True, progress=False)
    assert str(manual_path(ENC)) in str(info.value)
    assert files_under(home) == [] and read_record(ENC) is None  # no partial file anywhere
    assert F.fetch(ENC, accept_licence=True, progress=False).is_file()  # the next call completes
    assert server.requests[path] == 2 and read_record(ENC)["source_sha256"] == sha256(data)


def test_retries_with_back_off_inside_one_call(home, server, monkeypatch):
    path = _serve(server, ENC, m2d_enconly_zip(ENC.folder_name))
    server.cut[path] = 2
    with pytest.warns(UserWarning, match="retrying"):
        weights = F.fetch(ENC, accept_licence=True, progress=False)
    assert weights.is_file() and server.requests[path] == 3


def test_http_404_is_not_retried(home, server):
    with pytest.raises(F.FetchError, match="HTTP 404"):
        F.fetch(ENC, accept_licence=True, progress=False)
    assert server.requests[url_path(ENC)] == 1


# ------------------------------------------------------------------------------------ two processes
def test_two_processes_loading_the_same_name_download_once(home, server, tmp_path):
    path = _serve(server, ENC, m2d_enconly_zip(ENC.folder_name))
    server.gate = threading.Event()  # the first download is held until the second process waits for the lock
    code = ("import warnings; warnings.simplefilter('ignore'); import kikimimi; "
            "m = kikimimi.load('m2d-vit-base-mr7-enconly', accept_licence=True); print(m.embedding_dim)")
    env = {**os.environ, "KIKIMIMI_HOME": str(home), "KIKIMIMI_MODEL_MIRROR": server.url}
    logs = [tmp_path / f"err{i}.txt" for i in range(2)]
    handles = [open(log, "w") for log in logs]
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=h, text=True)
                 for h in handles]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("waiting for another" in log.read_text() for log in logs):
            time.sleep(0.1)
        server.gate.set()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for h in handles:
            h.close()
    errors = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert [out.strip() for out in outputs] == ["160", "160"]
    assert server.requests[path] == 1
    assert sum("waiting for another process" in e for e in errors) == 1  # the two really overlapped


# ------------------------------------------------------------------------------------ unsafe zips
def test_zip_with_parent_member_refused_through_fetch(home, server, tmp_path):
    path = _serve(server, ENC, zip_bytes({f"{ENC.folder_name}/w.pth": b"x" * 100, "../../evil.txt": b"evil"}))
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.'"):
        F.fetch(ENC, accept_licence=True, progress=False)
    assert server.requests[path] == 1
    assert not list(tmp_path.rglob("evil.txt")) and files_under(home) == []


def _write_zip(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "bomb", "oversized"])
def test_safe_extract_refuses(tmp_path, monkeypatch, case):
    ok = ("folder/ok.pth", b"fine")
    if case == "absolute":
        members = [ok, ("/tmp/kikimimi-evil.txt", b"x")]
    elif case == "dotdot":
        members = [ok, ("folder/../../evil.txt", b"x")]
    elif case == "symlink":
        link = zipfile.ZipInfo("folder/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        members = [ok, (link, "/etc/passwd")]
    elif case == "bomb":
        members = [("folder/zeros.pth", bytes(8 * 2**20))]  # 8 MiB of zeros deflate ~1000-fold
    else:
        monkeypatch.setattr(F, "MAX_ARCHIVE_BYTES", 1000)
        members = [("folder/big.pth", os.urandom(2000))]
    archive = _write_zip(tmp_path / "a.zip", members)
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="refused"):
        safe_extract(archive, dest)
    assert not dest.exists() or not any(dest.rglob("*"))  # checked before anything is written


def test_safe_extract_writes_a_normal_archive(tmp_path):
    archive = _write_zip(tmp_path / "a.zip", [("f/checkpoint-10.pth", b"a"), ("f/checkpoint-300.pth", b"b")])
    written = safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in written) == ["checkpoint-10.pth", "checkpoint-300.pth"]
    assert F.find_weight_file(tmp_path / "out").name == "checkpoint-300.pth"  # highest N, not lexicographic


# ------------------------------------------------------------------------------------ offline
def test_offline_without_cache_names_url_and_place_then_manual_file_is_used(home, server, monkeypatch):
    data = m2d_enconly_zip(ENC.folder_name)
    path = _serve(server, ENC, data)
    monkeypatch.setenv("KIKIMIMI_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        kikimimi.load(ENC.name, accept_licence=True)
    message = str(info.value)
    assert f"{server.url}{path}" in message and str(manual_path(ENC)) in message
    assert server.requests[path] == 0
    manual_path(ENC).parent.mkdir(parents=True)
    manual_path(ENC).write_bytes(data)  # the user downloads it by hand
    model = _quiet_load(ENC.name)  # still offline, no licence flag needed for a hand-placed file
    assert model.embedding_dim == 160 and server.requests[path] == 0
    assert not manual_path(ENC).exists() and read_record(ENC)["source_sha256"] == sha256(data)


def test_offline_with_cache_uses_it(home, server, monkeypatch):
    path = _serve(server, ENC, m2d_enconly_zip(ENC.folder_name))
    F.fetch(ENC, accept_licence=True, progress=False)
    monkeypatch.setenv("KIKIMIMI_OFFLINE", "1")
    assert _quiet_load(ENC.name).embedding_dim == 160
    assert server.requests[path] == 1


def test_no_network_fails_with_one_message(home, monkeypatch):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KIKIMIMI_MODEL_MIRROR", f"http://127.0.0.1:{port}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(OfflineError, match="after 3 attempts") as info:
            F.fetch(ENC, accept_licence=True, progress=False)
    assert f"127.0.0.1:{port}" in str(info.value) and str(manual_path(ENC)) in str(info.value)
    assert files_under(home) == []


# ------------------------------------------------------------------------------------ licence
def test_licence_gate(home, server, monkeypatch, capsys):
    path = _serve(server, ENC, m2d_enconly_zip(ENC.folder_name))
    with pytest.raises(LicenceNotAcceptedError) as info:
        kikimimi.load(ENC.name)
    message = str(info.value)
    assert "evaluation only" in message and "--accept-licence" in message and "KIKIMIMI_ACCEPT_LICENCE" in message
    assert server.requests[path] == 0 and files_under(home) == []
    monkeypatch.setenv("KIKIMIMI_ACCEPT_LICENCE", "1")
    assert _quiet_load(ENC.name).embedding_dim == 160
    assert "licence accepted" in capsys.readouterr().err and server.requests[path] == 1


# ------------------------------------------------------------------------------------ kikimimi folders
def test_registered_kikimimi_folder_local_and_over_http(home, server, tmp_path):
    _serve(server, ENC, m2d_enconly_zip(ENC.folder_name))
    bundle = load_encoder(F.fetch(ENC, accept_licence=True, progress=False))
    folder = save_kikimimi(bundle, tmp_path / "mine")
    register_model("mine-local", folder)
    local = kikimimi.load("mine-local")
    assert local.embedding_dim == 160 and get_entry("mine-local").sample_rate == 16000
    for name in ("config.json", "model.safetensors"):
        server.files[f"/models/mine/{name}"] = (folder / name).read_bytes()
    register_model("mine-http", f"{server.url}/models/mine", licence="apache-2.0", persist=True)
    registry._registered.clear()  # as in a new process: only registry.json keeps the entry
    assert registry.user_registry_path().is_file()
    remote = kikimimi.load("mine-http")  # not gated: no licence flag
    assert server.requests["/models/mine/model.safetensors"] == 1
    wave = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    np.testing.assert_allclose(remote.embed(wave), local.embed(wave), atol=1e-6)
