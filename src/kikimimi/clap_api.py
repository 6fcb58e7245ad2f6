"""Compatibility face: ``kikimimi.clap_api`` re-exports the audio–text API of :mod:`kikimimi.inference.clap`."""

from kikimimi.inference.clap import CLAPError, CLAPModel, cosine_similarity, load_clap, text_encoder_spec_from_config

__all__ = ["CLAPError", "CLAPModel", "cosine_similarity", "load_clap", "text_encoder_spec_from_config"]
