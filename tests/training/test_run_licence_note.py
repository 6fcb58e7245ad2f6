"""The licence note of a run's exported ``kikimimi/`` folder says where its weights came from."""

from __future__ import annotations

from kikimimi.checkpoints.ours import LICENCE_NOTE
from kikimimi.training.pretrain import run_licence_note
from kikimimi.training.settings import PretrainSettings


def test_a_run_from_scratch_is_not_labelled_as_converted_official_weights() -> None:
    scratch = PretrainSettings.from_dict({"method": "m2d"}, source="test")
    assert "no third-party weights" in run_licence_note(scratch)
    assert LICENCE_NOTE not in run_licence_note(scratch)


def test_further_pre_training_carries_the_initial_weights_terms() -> None:
    further = PretrainSettings.from_dict({"method": "m2d", "init_from": "/w/checkpoint-300.pth"}, source="test")
    note = run_licence_note(further)
    assert "/w/checkpoint-300.pth" in note and LICENCE_NOTE in note
