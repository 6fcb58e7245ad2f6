"""The captioner's training loss: teacher-forced next-token cross-entropy of the answer after the audio prefix."""

from __future__ import annotations

import torch
from torch import nn

from kikimimi.models.caption_prompts import IGNORE_INDEX
from kikimimi.models.prefix_mapper import PrefixMapper

__all__ = ["caption_loss"]


def caption_loss(
    mapper: PrefixMapper,
    lm: nn.Module,
    frames: torch.Tensor,
    frame_mask: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Teacher-forced next-token cross-entropy of the answer tokens.

    Args:
        frames ``[B, T, D]``, frame_mask ``[B, T]``: audio frame features (True = real frame).
        input_ids ``[B, L]``: prompt + answer + eos, right-padded; attention_mask ``[B, L]``; labels ``[B, L]``:
            ``input_ids`` at answer positions, :data:`IGNORE_INDEX` elsewhere.
    Returns: the mean loss over answer tokens (a scalar).
    """
    prefix = mapper(frames, frame_mask)
    emb = lm.get_input_embeddings()(input_ids)
    k = prefix.shape[1]
    inputs = torch.cat([prefix.to(emb.dtype), emb], dim=1)
    mask = torch.cat([torch.ones(prefix.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device),
                      attention_mask], dim=1)
    target = labels[:, 1:]
    # position K + i predicts token i + 1; the vocabulary projection is computed only from the first answer
    # position on (the prompt is ~30 tokens of ~45: most of a small LM's logits cost)
    answer = (target != IGNORE_INDEX).any(dim=0).nonzero()
    first = int(answer[0]) if answer.numel() else 0
    keep = torch.arange(k + first, k + labels.shape[1] - 1, device=inputs.device)
    try:
        pred = lm(inputs_embeds=inputs, attention_mask=mask, logits_to_keep=keep).logits  # [B, L - 1 - first, V]
    except TypeError:  # a model without logits_to_keep: all positions
        pred = lm(inputs_embeds=inputs, attention_mask=mask).logits[:, k + first:-1]
    if pred.shape[1] != keep.numel():  # logits_to_keep ignored or read differently
        pred = lm(inputs_embeds=inputs, attention_mask=mask).logits[:, k + first:-1]
    target = target[:, first:]
    return nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1),
                                       ignore_index=IGNORE_INDEX)
