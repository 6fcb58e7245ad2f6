"""The HEAR API module (``--module kikimimi.hear``): see :mod:`kikimimi.inference.hear`."""

from kikimimi.inference.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings, load_model

__all__ = ["HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
