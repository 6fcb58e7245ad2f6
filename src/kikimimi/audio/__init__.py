"""Step 1 of the pipeline, sound in: decoding (:mod:`~kikimimi.audio.decode`) and synthetic sounds
(:mod:`~kikimimi.audio.synthetic`). The decoding API is re-exported here: ``from kikimimi.audio import load_audio``."""

from kikimimi.audio.decode import (
    AudioDecodeError,
    AudioInfo,
    audio_info,
    load_audio,
    resample,
    stream_audio,
    to_mono,
)

__all__ = ["AudioDecodeError", "AudioInfo", "audio_info", "load_audio", "resample", "stream_audio", "to_mono"]
