"""Compatibility face: ``kikimimi.api`` re-exports the audio encoder API of :mod:`kikimimi.inference.encoder`."""

from kikimimi.inference.encoder import AudioEncoder, AudioInput, load, norm_stats_from_files, random_init_like

__all__ = ["AudioEncoder", "AudioInput", "load", "norm_stats_from_files", "random_init_like"]
