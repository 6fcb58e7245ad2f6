"""Where a stage-2 file (M2D2 / M2D-CLAP 2025) keeps its trained text encoder: the one home of that key mapping.

Official ``clap_only`` files store the text encoder under ``text_encoder.text_encoder.<Hugging Face model keys>``
(the model's attribute ``text_encoder``, then the wrapper's attribute ``text_encoder``), and the official runtime
strips one ``text_encoder.`` and loads the rest strictly (``../shared/docs/fact-sheet-m2d2-2026.md`` §4 "Output",
§6). kikimimi's text-encoder wrappers (:class:`kikimimi.models.text.HFTextEncoder` and friends) hold the network
as ``.model``, so kikimimi files before 2026-12 used ``text_encoder.model.<keys>``.

Three forms of the same tensors:

- **file keys, official** (what kikimimi writes now): ``text_encoder.text_encoder.<keys>``;
- **file keys, old kikimimi** (still read): ``text_encoder.model.<keys>``;
- **wrapper keys** (an :class:`~kikimimi.checkpoints.bundle.EncoderBundle`'s ``text_encoder_state``, what a
  kikimimi text-encoder wrapper's ``state_dict()`` has): ``model.<keys>``.

Tensors of other text encoders (no ``.model`` network, e.g. test stand-ins) keep their names in every form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = [
    "OFFICIAL_TEXT_PREFIX",
    "OLD_TEXT_PREFIX",
    "TEXT_ENCODER_PREFIX",
    "WRAPPER_NETWORK_PREFIX",
    "file_keys_from_wrapper",
    "rename_prefix",
    "text_keys_to_official",
    "text_keys_to_wrapper",
    "wrapper_keys_from_file",
]

V = TypeVar("V")

#: the model attribute that holds the text encoder in stage-2 files
TEXT_ENCODER_PREFIX = "text_encoder."
#: official stage-2 file keys of the text encoder's network
OFFICIAL_TEXT_PREFIX = "text_encoder.text_encoder."
#: kikimimi's stage-2 file keys before 2026-12 (read, never written)
OLD_TEXT_PREFIX = "text_encoder.model."
#: where a kikimimi text-encoder wrapper keeps its network
WRAPPER_NETWORK_PREFIX = "model."


def rename_prefix(state: Mapping[str, V], old: str, new: str) -> dict[str, V]:
    """``state`` with every key starting with ``old`` renamed to start with ``new`` (order kept)."""
    return {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}


def text_keys_to_official(state: Mapping[str, V], prefix: str = "") -> dict[str, V]:
    """Stage-2 model keys, old kikimimi form → official: ``<prefix>text_encoder.model.*`` →
    ``<prefix>text_encoder.text_encoder.*``; other keys unchanged."""
    return rename_prefix(state, prefix + OLD_TEXT_PREFIX, prefix + OFFICIAL_TEXT_PREFIX)


def text_keys_to_wrapper(state: Mapping[str, V], prefix: str = "") -> dict[str, V]:
    """Stage-2 model keys, official → the form a kikimimi model's modules load: ``<prefix>text_encoder.text_encoder.*``
    → ``<prefix>text_encoder.model.*`` (old kikimimi files already have it); other keys unchanged."""
    return rename_prefix(state, prefix + OFFICIAL_TEXT_PREFIX, prefix + OLD_TEXT_PREFIX)


def wrapper_keys_from_file(state: Mapping[str, V]) -> dict[str, V]:
    """A file's text-encoder tensors with the leading ``text_encoder.`` already removed → wrapper keys
    (``text_encoder.<keys>`` → ``model.<keys>``; ``model.<keys>`` and other names unchanged)."""
    return rename_prefix(state, TEXT_ENCODER_PREFIX, WRAPPER_NETWORK_PREFIX)


def file_keys_from_wrapper(state: Mapping[str, V]) -> dict[str, V]:
    """Wrapper keys → official file keys: ``model.<keys>`` → ``text_encoder.text_encoder.<keys>``, any other
    name → ``text_encoder.<name>``."""
    return {
        (OFFICIAL_TEXT_PREFIX + k[len(WRAPPER_NETWORK_PREFIX) :] if k.startswith(WRAPPER_NETWORK_PREFIX)
         else TEXT_ENCODER_PREFIX + k): v
        for k, v in state.items()
    }  # fmt: skip
