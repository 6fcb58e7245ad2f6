"""A captioner trained on a registered model name (``--audio-model open-m2d-tiny``) loads again by that name."""

from __future__ import annotations

from pathlib import Path

import pytest

from kikimimi.checkpoints.registry import PACKAGED_DIR
from kikimimi.inference.captioner import CaptionerError, _load_encoder


@pytest.mark.skipif(not (PACKAGED_DIR / "open-m2d-tiny" / "model.safetensors").is_file(),
                    reason="no packaged open-m2d-tiny in this checkout")
def test_a_registered_name_is_resolved_not_taken_for_a_missing_path(monkeypatch):
    monkeypatch.setenv("KIKIMIMI_OFFLINE", "1")
    encoder = _load_encoder(Path("cap"), {"audio_model": "open-m2d-tiny", "audio_embedding_dim": 960}, None, "cpu")
    assert encoder.embedding_dim == 960


def test_an_unknown_name_or_missing_path_is_still_one_line():
    with pytest.raises(CaptionerError, match="its audio model 'no-such-model' is not there"):
        _load_encoder(Path("cap"), {"audio_model": "no-such-model", "audio_embedding_dim": 960}, None, "cpu")
