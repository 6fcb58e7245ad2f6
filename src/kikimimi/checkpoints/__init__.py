"""Checkpoint import/export: safe loading, official NTT layouts, kikimimi's safetensors format.

- :func:`safe_torch_load` — ``torch.load`` with ``weights_only=True`` and a small allow-list.
- :func:`parse_official_name` — sizes from official folder/file names (docs/reference.md §6).
- :func:`load_encoder` — official M2D / M2D-CLAP / BYOL-A files or kikimimi folders → :class:`EncoderBundle`.
- :func:`save_kikimimi` / :func:`to_official_state_dict` — write our format / export the official layout.
- :func:`list_models` / :func:`register_model` / :func:`fetch` / :func:`resolve_model_source` — pretrained models
  by name: the registry of official releases, download + verification + cache.
"""

from kikimimi.checkpoints.bundle import EncoderBundle, TaggingHead
from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.hub import FetchError, fetch, resolve_model_source
from kikimimi.checkpoints.names import OfficialName, parse_official_name, try_parse_official_name
from kikimimi.checkpoints.official import BYOLA_FALLBACK_STATS, load_encoder
from kikimimi.checkpoints.ours import (
    LICENCE_NOTE,
    is_kikimimi_checkpoint,
    load_kikimimi,
    official_folder_name,
    save_kikimimi,
    to_official_state_dict,
)
from kikimimi.checkpoints.registry import ModelEntry, UnknownModelError, get_entry, list_models, register_model
from kikimimi.checkpoints.safe_load import SAFE_GLOBALS, safe_torch_load

__all__ = [
    "BYOLA_FALLBACK_STATS",
    "CheckpointError",
    "EncoderBundle",
    "FetchError",
    "LICENCE_NOTE",
    "ModelEntry",
    "OfficialName",
    "SAFE_GLOBALS",
    "TaggingHead",
    "UnknownModelError",
    "fetch",
    "get_entry",
    "is_kikimimi_checkpoint",
    "list_models",
    "load_encoder",
    "load_kikimimi",
    "official_folder_name",
    "parse_official_name",
    "register_model",
    "resolve_model_source",
    "safe_torch_load",
    "save_kikimimi",
    "to_official_state_dict",
    "try_parse_official_name",
]
