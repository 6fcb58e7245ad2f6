"""Registry entries from NTT's 2026-02-23 README (../shared/docs/official-releases.md): the two added releases (one a
tar archive), the SHA-256 pins of weight files inside release archives (a mismatch refused naming expected and
received), and the 2025 M2D-CLAP marked as NTT's recommended model."""

from __future__ import annotations

import io
import tarfile

import pytest
from model_server import files_under, m2d_release_zip, sha256, url_path, zip_bytes

from kikimimi.checkpoints import get_entry, register_model
from kikimimi.checkpoints import hub as F
from kikimimi.checkpoints.hub import HashMismatchError, UnsafeArchiveError, model_dir, read_record, safe_extract_tar
from kikimimi.checkpoints.registry import ALIASES, list_models


def _tgz(members: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
    return buffer.getvalue()


def test_the_added_releases_and_the_recommended_model() -> None:
    icbhi, msm = get_entry("m2d-x-icbhi"), get_entry("msm-mae-mr75")
    assert icbhi.url.endswith("/v0.2.0/m2d_x_icbhi.tgz") and icbhi.kind == "tgz" and icbhi.folder_name == "m2d_x_icbhi"
    assert (icbhi.input_size, icbhi.patch_size, icbhi.embedding_dim) == ((80, 200), (16, 4), 5 * 768)
    assert msm.url.endswith("/v0.1.0/msm_mae_vit_base-80x608p16x16-220924-mr75.zip") and msm.family == "msm-mae"
    assert all(e.licence == "ntt-m2d-eval" for e in (icbhi, msm))
    recommended = [e.name for e in list_models() if e.recommended]
    assert recommended == ["m2d-clap-2025"] and ALIASES["m2d2"] == "m2d-clap-2025"
    assert "recommended" in get_entry("m2d-clap-2025").description
    pins = {e.name: e.inner_sha256 for e in list_models() if e.inner_sha256}
    assert pins == {
        "m2d-clap-2025": "238521603c04862ab151cdd80980b591cb36ebe844d43203992fac9ef085c8a1",
        "m2d-vit-base-16x4": "63578974bc004ef57a8e5456bac8c684f62c9285537a7b2ddef13b442386786f",
    }
    with pytest.raises(ValueError, match="inner_sha256 must be 64 lower-case hex digits"):
        register_model("bad-pin", "https://example.org/x.zip", inner_sha256="ABC")


def test_a_weight_file_that_differs_from_the_pin_is_refused(home, server) -> None:
    entry = get_entry("m2d-vit-base-16x4")
    data = m2d_release_zip(entry.folder_name, input_size=(80, 200), patch_size=(16, 4))
    server.files[url_path(entry)] = data
    with pytest.raises(HashMismatchError) as err:
        F.fetch(entry, accept_licence=True, progress=False)
    message = str(err.value)
    assert entry.inner_sha256 in message and "checkpoint-300.pth" in message and "refused, nothing cached" in message
    received = message.split("has SHA-256 ")[1].split(",")[0]
    assert len(received) == 64 and received != entry.inner_sha256
    assert files_under(home) == [] and not model_dir(entry).exists()
    # pinned to the bytes that were received, the same download is accepted and verified again on every use
    register_model(entry.name, entry.url, replace=True, inner_sha256=received)
    weights = F.fetch(entry.name, accept_licence=True, progress=False)
    assert sha256(weights.read_bytes()) == received and F.fetch(entry.name) == weights
    register_model(entry.name, entry.url, replace=True, inner_sha256="0" * 64)  # a pin set after caching
    with pytest.raises(HashMismatchError, match="0{64}"):
        F.fetch(entry.name)


def test_the_tar_release_unpacks_and_unsafe_tars_are_refused(home, server, tmp_path) -> None:
    entry = get_entry("m2d-x-icbhi")
    server.files[url_path(entry)] = _tgz({"m2d_x_icbhi/checkpoint-600.pth": b"weights", "m2d_x_icbhi/log.txt": b"log"})
    weights = F.fetch(entry, accept_licence=True, progress=False)
    assert weights.name == "checkpoint-600.pth" and weights.read_bytes() == b"weights"
    assert read_record(entry)["weights"] == "m2d_x_icbhi/checkpoint-600.pth"
    for members, link, what in (
        ({"f/ok.pth": b"x", "f/../../evil.txt": b"x"}, None, "'..'"),
        ({"f/ok.pth": b"x"}, "f/link", "link or a special file"),
        ({"/tmp/kikimimi-evil.txt": b"x"}, None, "absolute path"),
    ):
        archive = tmp_path / "a.tgz"
        archive.write_bytes(_tgz(members, link=link))
        dest = tmp_path / "out"
        with pytest.raises(UnsafeArchiveError, match=what):
            safe_extract_tar(archive, dest)
        assert not dest.exists() or not any(dest.rglob("*"))  # checked before anything is written
    not_tar = tmp_path / "page.tgz"
    not_tar.write_bytes(zip_bytes({"a": b"b"}))
    with pytest.raises(F.FetchError, match="not a tar archive"):
        safe_extract_tar(not_tar, tmp_path / "out2")
