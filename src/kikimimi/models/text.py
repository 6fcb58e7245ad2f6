"""Text encoders behind one interface: sentence embeddings ``[N, D]`` for CLAP-style training and zero-shot use.

Every encoder is a :class:`TextEncoder` (an ``nn.Module``) with ``dim`` (output width D), ``name`` (the id
recorded in configs and caption-embedding caches), ``encode(texts)`` (no autograd, eval mode, float32 on the
CPU) and ``forward(texts)`` (with autograd on the encoder's device, for trainable text encoders). Outputs are
never L2-normalised by this module; a sentence-transformers pipeline that ends in its own ``Normalize`` layer
(all-MiniLM-L6-v2 does) keeps it.

Loading them from spec strings (offline) lives in :mod:`kikimimi.models.text_loading`;
:class:`HFTextEncoder` wraps any Hugging Face model built in memory (tests use tiny random ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "POOLINGS",
    "HFTextEncoder",
    "OwnEncodeTextEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "TEXT_EXTRA_HINT",
    "TextEncoderError",
    "cls_pool",
    "last_token_pool",
    "mean_pool",
]

#: Pooling rules of :class:`HFTextEncoder`: attention-masked mean, first position, last real position.
POOLINGS = ("mean", "cls", "last")

#: What to tell a user who lacks the optional text dependencies.
TEXT_EXTRA_HINT = "install the text extra (pip install 'kikimimi[text]')"


class TextEncoderError(ValueError):
    """A text encoder cannot be built or used; the message says what is missing and how to provide it."""


# --------------------------------------------------------------------------------------------
# Pooling rules
# --------------------------------------------------------------------------------------------


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``[B, L, D]`` over the positions where ``attention_mask`` ``[B, L]`` is 1 → ``[B, D]``.

    Padding positions do not contribute; a row without any real position gives zeros.
    """
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    total = (hidden * mask).sum(dim=1)
    count = mask.sum(dim=1).clamp_min(1.0)
    return total / count


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The first position (BERT's ``[CLS]``) of ``hidden`` ``[B, L, D]`` → ``[B, D]`` (the mask is not needed)."""
    return hidden[:, 0]


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The last position whose ``attention_mask`` ``[B, L]`` is 1, per row of ``hidden`` ``[B, L, D]`` → ``[B, D]``.

    Correct for right padding (the usual case here) and also for left padding.
    """
    length = attention_mask.shape[1]
    flipped_first = attention_mask.flip(dims=[1]).to(torch.long).argmax(dim=1)
    index = (length - 1 - flipped_first).clamp_min(0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


_POOL_FUNCS = {"mean": mean_pool, "cls": cls_pool, "last": last_token_pool}


# --------------------------------------------------------------------------------------------
# Interface
# --------------------------------------------------------------------------------------------


def _as_text_list(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


class TextEncoder(nn.Module):
    """Abstract text encoder: ``texts`` → sentence embeddings ``[N, dim]`` float32 (not normalised here).

    Attributes:
        dim: output width D.
        name: id recorded in configs and caches (``"minilm"``, ``"st:/abs/path"``, ``"llm:/abs/path#eos"`` …).

    Subclasses implement :meth:`embed_batch` (one batch, with autograd, on the encoder's device).
    """

    dim: int
    name: str

    def __init__(self, dim: int, name: str) -> None:
        super().__init__()
        self.dim = int(dim)
        self.name = str(name)

    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for an encoder without parameters)."""
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def embed_batch(self, texts: list[str]) -> torch.Tensor:
        """Embed one batch ``texts`` → ``[len(texts), dim]`` on :attr:`device`, with autograd."""
        raise NotImplementedError

    def forward(self, texts: Sequence[str] | str) -> torch.Tensor:
        """Embed all ``texts`` in one batch with autograd (the module's current train/eval mode) → ``[N, dim]``."""
        items = _as_text_list(texts)
        if not items:
            return torch.zeros(0, self.dim, device=self.device)
        out = self.embed_batch(items)
        return out.float() if out.dtype != torch.float32 else out

    def encode(self, texts: Sequence[str] | str, batch_size: int = 32) -> torch.Tensor:
        """Embed ``texts`` without autograd, in eval mode, ``batch_size`` texts at a time → ``[N, dim]`` float32 CPU.

        Texts are batched by length to keep padding short; the result follows the input order and does not
        depend on which texts share a batch (up to float rounding). The train/eval mode is restored afterwards.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_text_list(texts)
        out = torch.zeros(len(items), self.dim, dtype=torch.float32)
        if not items:
            return out
        order = sorted(range(len(items)), key=lambda i: (-len(items[i]), i))
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    emb = self.embed_batch([items[i] for i in idx])
                    out[torch.tensor(idx)] = emb.detach().float().cpu()
        finally:
            self.train(was_training)
        return out

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}"


# --------------------------------------------------------------------------------------------
# Hugging Face models
# --------------------------------------------------------------------------------------------


class HFTextEncoder(TextEncoder):
    """A Hugging Face model + tokenizer with a pooling rule: ``mean`` / ``cls`` / ``last`` (see :data:`POOLINGS`).

    Works with encoder models (``BertModel``, GTE) and causal LMs (``LlamaForCausalLM`` …): the final hidden
    state is read from ``model.base_model`` (for a causal LM the decoder without its LM head; the same tensor as
    the last entry of ``output_hidden_states``). Texts are tokenised with the tokenizer's special tokens,
    truncated to ``max_length`` tokens, optionally given a trailing EOS token (``append_eos``), and right-padded
    to the longest text of the batch with an attention mask.

    Args:
        model: a ``transformers`` ``PreTrainedModel`` (any module whose ``base_model`` returns ``last_hidden_state``).
        tokenizer: a ``transformers`` tokenizer for ``model``.
        pooling: ``"mean"`` (attention-masked mean), ``"cls"`` (position 0) or ``"last"`` (last real token).
        max_length: token limit per text, EOS included.
        append_eos: append ``tokenizer.eos_token_id`` unless the text already ends with it.
        name: id recorded in caches.
        dim: output width; default ``model.config.hidden_size``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        pooling: str = "mean",
        max_length: int = 512,
        append_eos: bool = False,
        name: str = "hf",
        dim: int | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise TextEncoderError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        if max_length < 2:
            raise TextEncoderError(f"max_length must be >= 2, got {max_length}")
        if dim is None:
            config = getattr(model, "config", None)
            dim = getattr(config, "hidden_size", None)
            if dim is None:
                raise TextEncoderError("cannot tell the output width: model.config.hidden_size is missing; pass dim=")
        super().__init__(int(dim), name)
        self.model = model
        self.train(model.training)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        self.append_eos = bool(append_eos)
        if append_eos and getattr(tokenizer, "eos_token_id", None) is None:
            raise TextEncoderError(f"{name}: the tokenizer has no EOS token, so '#eos' pooling cannot be used")
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        self.pad_token_id = int(pad) if pad is not None else 0

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both ``[B, L]`` int64, right-padded (L = longest text of the batch)."""
        limit = self.max_length - 1 if self.append_eos else self.max_length
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit, padding=False)
        ids_list = [list(ids) for ids in enc["input_ids"]]
        if self.append_eos:
            eos = int(self.tokenizer.eos_token_id)
            ids_list = [ids if ids and ids[-1] == eos else [*ids, eos] for ids in ids_list]
        for i, ids in enumerate(ids_list):
            if not ids:
                raise TextEncoderError(f"{self.name}: text {texts[i]!r} gives no tokens")
        width = max(len(ids) for ids in ids_list)
        input_ids = torch.full((len(ids_list), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids_list), width), dtype=torch.long)
        for i, ids in enumerate(ids_list):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        return input_ids, mask

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final hidden state ``[B, L, D]`` of the model for right-padded ``input_ids`` / ``attention_mask``."""
        base = getattr(self.model, "base_model", self.model)
        out = base(input_ids=input_ids, attention_mask=attention_mask)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:
            hidden = out[0]
        return hidden

    def embed_batch(self, texts: list[str]) -> torch.Tensor:
        input_ids, mask = self.tokenize(texts)
        device = self.device
        input_ids, mask = input_ids.to(device), mask.to(device)
        hidden = self.hidden_states(input_ids, mask)
        return _POOL_FUNCS[self.pooling](hidden, mask)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pooling={self.pooling!r}, max_length={self.max_length}, eos={self.append_eos}"


class SentenceTransformerEncoder(TextEncoder):
    """A ``sentence_transformers.SentenceTransformer`` pipeline (its own pooling and optional normalisation).

    Args:
        model: the loaded pipeline.
        name: id recorded in caches.
    """

    def __init__(self, model: nn.Module, *, name: str) -> None:
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            raise TextEncoderError(f"{name}: the sentence-transformers pipeline does not report its output width")
        super().__init__(int(dim), name)
        self.model = model
        self.train(model.training)

    def embed_batch(self, texts: list[str]) -> torch.Tensor:
        prep = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = prep(texts)
        device = self.device
        features = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
        return self.model(features)["sentence_embedding"]


class OwnEncodeTextEncoder(TextEncoder):
    """A remote-code embedding model called through its own ``encode(texts, instruction=…, max_length=…)``: its
    tokenizer, pooling (NV-Embed-v2: latent-attention pooling over the bidirectional LLM's states, EOS added, right
    padding) and output are the model's, not kikimimi's. The output is returned as the model gives it (NV-Embed-v2's
    is not L2-normalised), as float32 on :attr:`device`.

    Args:
        model: a loaded model with an ``encode`` method returning ``[B, D]`` (tensor or array).
        name: id recorded in caches.
        dim: output width D.
        instruction: the instruction prefix (NV-Embed-v2 in M2D-CLAP: empty).
        max_length: the token limit passed to ``encode`` (NV-Embed-v2 in M2D-CLAP: 32768).
    """

    def __init__(self, model: nn.Module, *, name: str, dim: int, instruction: str = "", max_length: int = 32768):
        super().__init__(int(dim), name)
        self.model = model
        self.instruction = str(instruction)
        self.max_length = int(max_length)
        self.train(model.training)

    def embed_batch(self, texts: list[str]) -> torch.Tensor:
        out = self.model.encode(texts, instruction=self.instruction, max_length=self.max_length)
        out = torch.as_tensor(out).to(self.device)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise TextEncoderError(f"{self.name}: encode() returned shape {tuple(out.shape)} for {len(texts)} texts")
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, instruction={self.instruction!r}, max_length={self.max_length}"
