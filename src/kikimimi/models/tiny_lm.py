"""A tiny random Llama-style language model with a word-level tokenizer, for demos and quick CPU runs.

:func:`write_tiny_lm` collects the words of the given texts (lower-cased; punctuation as separate tokens),
builds a ``tokenizers`` word-level tokenizer (``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``) and a small
``LlamaForCausalLM`` with random weights, and saves both with ``save_pretrained`` — a folder that
:func:`kikimimi.models.causal_lm.load_causal_lm` reads. Such a model knows no language: it is trained
together with the mapper (``train_lm=True``), which takes seconds on a CPU for templated captions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from kikimimi.models.caption_prompts import CAPTION_QUESTION
from kikimimi.models.causal_lm import CAPTION_EXTRA_HINT
from kikimimi.models.text import TextEncoderError
from kikimimi.models.text_loading import quiet_huggingface

__all__ = ["PROMPT_WORDS", "write_tiny_lm", "words_of"]

#: words of the plain prompt format ("Question: … Answer:") and the caption question
PROMPT_WORDS = ("question", ":", "answer", *CAPTION_QUESTION.lower().replace(".", " .").split())
_WORD = re.compile(r"\w+|[^\w\s]+")  # as pre_tokenizers.Whitespace splits


def words_of(texts: Iterable[str]) -> list[str]:
    """Sorted unique lower-case words and punctuation marks of ``texts``."""
    return sorted({w for t in texts for w in _WORD.findall(str(t).lower())})


def write_tiny_lm(texts: Iterable[str], folder: str | os.PathLike, *, dim: int = 64, layers: int = 2,
                  heads: int = 4, max_positions: int = 256, seed: int = 0) -> Path:
    """Write a tiny random Llama + word-level tokenizer covering the words of ``texts`` to ``folder``.

    Raises:
        TextEncoderError: transformers / tokenizers are missing (the ``caption`` extra).
    """
    try:
        import tokenizers
        from tokenizers import models, normalizers, pre_tokenizers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    except ImportError as exc:
        raise TextEncoderError(f"the tiny language model needs transformers and tokenizers ({exc}); "
                               f"{CAPTION_EXTRA_HINT}") from exc
    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + [w for w in words_of(list(texts) + list(PROMPT_WORDS))
                                                     if w not in specials])}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ and runs of other non-space characters
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                     bos_token="<bos>", eos_token="<eos>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_huggingface():
        model.save_pretrained(out)
        hf_tok.save_pretrained(out)
    return out
