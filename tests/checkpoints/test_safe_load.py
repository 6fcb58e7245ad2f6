"""Safe loading of torch checkpoints: allow-listed harmless types load, code-running pickles do not."""

from __future__ import annotations

import argparse
import builtins
import pickle
import types

import numpy as np
import pytest
import torch

from kikimimi.checkpoints import CheckpointError, safe_torch_load


class _WritesMarker:
    """A pickle payload that creates a file when unpickled (stands in for malicious code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _WritesMarker(str(marker))}, path)
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(path)
    text = str(info.value)
    assert "evil.pth" in text
    assert "open" in text  # the offending global is named
    assert "trust_pickle=True" in text and "--trust-pickle" in text
    assert not marker.exists()
    # only an explicit opt-in runs the pickle
    obj = safe_torch_load(path, trust_pickle=True)
    assert marker.exists()
    assert torch.equal(obj["model"]["w"], torch.zeros(2))


def test_training_file_with_namespace_and_numpy_loads(tmp_path):
    path = tmp_path / "checkpoint-300.pth"
    args = argparse.Namespace(
        model="m2d_vit_base", blr=np.float64(3e-4), seed=np.int64(3), flag=np.bool_(True)
    )
    optimizer = {"param_groups": [{"lr": np.float32(1e-3), "betas": (0.9, 0.95)}], "state": {}}
    payload = {
        "model": {"w": torch.arange(4.0)},
        "args": args,
        "optimizer": optimizer,
        "epoch": 300,
        "arr": np.arange(3, dtype=np.int16),
        "dtype": np.dtype("float64"),
    }
    torch.save(payload, path)
    obj = safe_torch_load(path)
    assert isinstance(obj["args"], argparse.Namespace)
    assert obj["args"].blr == pytest.approx(3e-4) and int(obj["args"].seed) == 3
    assert obj["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert np.array_equal(obj["arr"], np.arange(3)) and obj["arr"].dtype == np.int16
    assert obj["dtype"] == np.dtype("float64")
    assert torch.equal(obj["model"]["w"], torch.arange(4.0))


class _OldNumpyPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes numpy globals under their numpy-1.x module path (``numpy.core``), as older files do."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            qual = name or obj.__qualname__
            self.write(pickle.GLOBAL + f"{module.replace('numpy._core', 'numpy.core')}\n{qual}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def test_numpy1_module_paths_are_allowed(tmp_path):
    path = tmp_path / "old_numpy.pth"
    old_pickle = types.SimpleNamespace(Pickler=_OldNumpyPickler, __name__="old_pickle")
    torch.save({"lr": np.float64(0.5), "w": torch.ones(2)}, path, pickle_module=old_pickle, pickle_protocol=2)
    with zipfile_text(path) as data:
        assert b"numpy.core.multiarray" in data  # the file really uses the old path
    obj = safe_torch_load(path)
    assert float(obj["lr"]) == 0.5 and torch.equal(obj["w"], torch.ones(2))


class zipfile_text:  # noqa: N801 - tiny context manager reading the pickle inside a torch zip file
    def __init__(self, path):
        import zipfile

        self._zip = zipfile.ZipFile(path)

    def __enter__(self) -> bytes:
        name = next(n for n in self._zip.namelist() if n.endswith("data.pkl"))
        return self._zip.read(name)

    def __exit__(self, *exc) -> None:
        self._zip.close()


def test_missing_empty_truncated_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as info:
        safe_torch_load(tmp_path / "nope.pth")
    assert "nope.pth" in str(info.value)

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        safe_torch_load(empty)

    good = tmp_path / "good.pth"
    torch.save({"w": torch.randn(2000)}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        safe_torch_load(truncated)
    assert "truncated.pth" in str(info.value)

    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n" * 20)
    with pytest.raises(CheckpointError, match="not a torch checkpoint") as info:
        safe_torch_load(text)
    assert "notes.pth" in str(info.value)

    with pytest.raises(CheckpointError, match="directory"):
        safe_torch_load(tmp_path)


def test_legacy_format_and_error_attributes(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.arange(3.0)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(safe_torch_load(path)["w"], torch.arange(3.0))
    err = CheckpointError(path, "boom")
    assert err.path == path and err.reason == "boom" and str(err) == f"'{path}': boom"
