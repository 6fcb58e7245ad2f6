"""Decoding answers: :func:`beam_search` (beam 1 = greedy) over a next-token function, and :func:`generate`,
which runs it for one clip's audio prefix + prompt with the language model's key/value cache."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from kikimimi.models.prefix_mapper import PrefixMapper

__all__ = ["beam_search", "generate"]

NextFn = Callable[[list[list[int]], Any], tuple[torch.Tensor, Any]]
ReorderFn = Callable[[Any, torch.Tensor], Any]


def beam_search(
    next_logprobs: NextFn,
    state: Any,
    *,
    eos_id: int,
    beam_size: int = 1,
    max_new_tokens: int = 30,
    reorder: ReorderFn | None = None,
    length_penalty: float = 0.0,
) -> tuple[list[int], float]:
    """The highest-scoring token sequence under a next-token distribution (beam 1 = greedy).

    Args:
        next_logprobs: ``(sequences, state) -> (log-probabilities [N, V], new state)`` for the last token of each
            of the N live sequences (``sequences[i]`` = the tokens so far, ``[]`` at the start).
        state: passed to ``next_logprobs`` (e.g. a key/value cache for the N sequences).
        reorder: ``(state, index [N'])`` → the state of the sequences kept (rows of the previous N); ``None`` = no
            state to reorder.
        length_penalty: α of the GNMT length normalisation ``score / len^α`` used to rank finished sequences
            (0 = plain sum of log-probabilities).
    Returns: ``(tokens without eos, total log-probability)`` of the best sequence.
    """
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []

    def rank(item: tuple[list[int], float]) -> float:
        return item[1] / (max(len(item[0]), 1) ** length_penalty) if length_penalty else item[1]

    for _ in range(max_new_tokens):
        logp, state = next_logprobs([b[0] for b in beams], state)
        logp = logp.float().cpu()
        scores = torch.tensor([b[1] for b in beams])[:, None] + logp
        top = torch.topk(scores.flatten(), min(scores.numel(), 2 * beam_size))
        kept: list[tuple[list[int], float]] = []
        rows: list[int] = []
        vocab = logp.shape[1]
        for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            row, tok = divmod(int(flat), vocab)
            if tok == eos_id:
                finished.append((beams[row][0], float(value)))
            else:
                kept.append((beams[row][0] + [tok], float(value)))
                rows.append(row)
            if len(kept) == beam_size:
                break
        best_done = max((rank(f) for f in finished), default=-math.inf)
        if not kept or (not length_penalty and best_done >= kept[0][1]):
            beams = []
            break  # log-probabilities are ≤ 0: a live beam can only lose score
        beams = kept
        if reorder is not None:
            state = reorder(state, torch.tensor(rows, dtype=torch.long))
    candidates = finished + beams
    tokens, score = max(candidates, key=rank)
    return tokens, score


def _cache_argument(lm: nn.Module) -> str:
    """The name of the key/value-cache argument of ``lm.forward`` (``cache`` in transformers ≥ 5.2x, else
    ``past_key_values``)."""
    params = inspect.signature(lm.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def generate(
    mapper: PrefixMapper,
    lm: nn.Module,
    frames: torch.Tensor,
    prompt: Sequence[int],
    *,
    eos_id: int,
    beam_size: int = 1,
    max_new_tokens: int = 30,
    length_penalty: float = 0.0,
    banned_ids: Sequence[int] = (),
) -> tuple[list[int], float]:
    """Decode one answer for one clip: ``frames`` ``[T, D]`` and the ``prompt`` token ids.

    The prefix and prompt go through the language model once; each new token reuses its key/value cache
    (reordered per beam). ``banned_ids`` (e.g. padding) are never produced. Returns ``(tokens, log-prob)``.
    """
    device = frames.device
    embed = lm.get_input_embeddings()
    prefix = mapper(frames[None])
    first = torch.cat([prefix.to(embed.weight.dtype),
                       embed(torch.tensor([list(prompt)], dtype=torch.long, device=device))], dim=1)
    banned = torch.tensor(sorted({int(i) for i in banned_ids} - {int(eos_id)}), dtype=torch.long)

    cache_arg = _cache_argument(lm)

    def step(seqs: list[list[int]], cache: Any) -> tuple[torch.Tensor, Any]:
        if cache is None:
            out = lm(inputs_embeds=first, use_cache=True)
        else:
            last = torch.tensor([[s[-1]] for s in seqs], dtype=torch.long, device=device)
            out = lm(input_ids=last, use_cache=True, **{cache_arg: cache})
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        if banned.numel():
            logp[:, banned.to(logp.device)] = -math.inf
        new_cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
        if new_cache is None:
            raise RuntimeError(f"{type(lm).__name__} returned no key/value cache; captioning needs a causal LM "
                               "that supports use_cache")
        return logp, new_cache

    def reorder(cache: Any, index: torch.Tensor) -> Any:
        cache.reorder_cache(index.to(device))
        return cache

    return beam_search(step, None, eos_id=int(eos_id), beam_size=beam_size, max_new_tokens=max_new_tokens,
                       reorder=reorder, length_penalty=length_penalty)
