"""Audio captioning and questions about a sound: frozen audio encoder → mapper → local language model.

- :func:`load_captioner` ``(path).caption(audio)`` / ``.ask(audio, question)`` (:mod:`.model`);
- :func:`train_captioner` — features, training with the pre-training loop, the captioner folder (:mod:`.train`);
- :func:`caption_files` — files / folders / CSV lists per window, errors reported (:mod:`.model`);
- :func:`nearest_neighbour_baseline` — a folder's nearest-training-clip captions, without its language model;
- :mod:`.tiny_lm` — a tiny word-level Llama for CPU demos; :mod:`.demo_stage` — the README demo's stage.
"""

from kikimimi.apps.captioning.model import (
    CaptionedFile,
    Captioner,
    CaptionerError,
    caption_files,
    load_captioner,
    nearest_neighbour_baseline,
    save_captioner,
)
from kikimimi.apps.captioning.train import CaptionerTraining, train_captioner

__all__ = [
    "CaptionedFile",
    "Captioner",
    "CaptionerError",
    "CaptionerTraining",
    "caption_files",
    "load_captioner",
    "nearest_neighbour_baseline",
    "save_captioner",
    "train_captioner",
]
