"""A stage-2 run checkpointed before 2026-12 (text encoder under ``text_encoder.model.*``) resumes after the rename
of those tensors to the official ``text_encoder.text_encoder.*`` (issue 28)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kikimimi.training.checkpointing import restore_method_state


class _Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = nn.Linear(3, 2)


class _Stage2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = _Wrapper()  # state keys text_encoder.text_encoder.{weight,bias}
        self.proj = nn.Linear(2, 2)


def test_old_text_encoder_names_restore_into_the_official_ones() -> None:
    saved = _Stage2()
    old_official = {k.replace("text_encoder.text_encoder.", "text_encoder.model."): v.clone()
                    for k, v in saved.state_dict().items()}
    fresh = _Stage2()
    restore_method_state(fresh, old_official, shared={}, extra={})
    for key, value in saved.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_a_tensor_in_no_part_is_still_refused() -> None:
    with pytest.raises(KeyError, match="cannot restore"):
        restore_method_state(_Stage2(), {"proj.weight": torch.zeros(2, 2)}, shared={}, extra={})
